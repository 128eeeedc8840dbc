// Package ecmp holds the statistics of multi-flow probing over ECMP and LAG
// member paths: no sockets, no clocks, pure functions over counts and hop
// lists.
//
//   - Test decides whether a target's loss concentrates on some of its
//     flows (flow identities that routers hash onto different member
//     paths) rather than being spread evenly, and which flows are lossy.
//     The test is exact: its false-alarm probability per evaluation is at
//     most Options.Alpha whatever the window and loss rate (see Test).
//   - GroupPaths turns Paris traces of several flows into the distinct
//     member paths and the flows on each; SuspectHop and Diverge name the
//     first hop where a lossy flow's path leaves the healthy ones.
//   - MissAny, MissOne, FlowsFor and CostOf are the coverage and cost
//     arithmetic of N flows over M members, for check-config.
//
// docs/ecmp.md explains the choices and the measured false-alarm rate and
// power.
package ecmp
