// Package netlab is a user-space WAN emulator for tests and demos: one
// network namespace per site, each with a TUN device carrying the site's
// addresses, and one set of goroutines holding every TUN fd that moves
// packets between sites with a per-path one-way delay, jitter, loss, down
// switch, intermediate hops (Time Exceeded), path MTU (Fragmentation
// Needed / Packet Too Big or a black hole) and DSCP re-marking, all
// changeable at run time. The kernel here has no netem, so this is how the
// project shows that probed measures what the network did.
//
// Only addresses of the lab's own namespaces are ever sent traffic: every
// packet a site sends leaves through its TUN device into the emulator,
// which delivers it to another lab namespace or drops it.
//
// See docs/lab.md for the API, the command line and the accuracy figures.
package netlab
