package netlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Forward listens on hostAddr in the caller's (host) namespace and relays
// every connection to target dialled inside the site's namespace, so tools
// on the host (Prometheus, a browser, curl) reach an agent in the lab. It
// stops when ctx is done or the returned listener is closed.
func (s *Site) Forward(ctx context.Context, hostAddr, target string) (net.Listener, error) {
	ln, err := net.Listen("tcp", hostAddr)
	if err != nil {
		return nil, fmt.Errorf("forwarding %s to %s in %s: %w", hostAddr, target, s.Name(), err)
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go func() {
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			c, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				up, err := s.DialContext(dctx, "tcp", target)
				cancel()
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				select {
				case <-done:
				case <-ctx.Done():
				}
			}()
		}
	}()
	return ln, nil
}
