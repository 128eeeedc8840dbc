package agent

// service is a singleton part of the agent (the STAMP reflector, the AWS
// poller) that runs with one set of settings: applying the same settings
// again keeps it running, other settings restart it, none stop it. It is
// the singleton counterpart of the engine's reconcile by key.
type service struct {
	sig  string
	stop func()
}

// apply makes the service run with settings sig (stopped when sig is "").
// start is called only when the settings changed; the old instance is
// stopped first, since the new one may need its sockets.
func (s *service) apply(sig string, start func() (stop func(), err error)) error {
	if s.stop != nil && sig == s.sig {
		return nil
	}
	s.halt()
	if sig == "" {
		return nil
	}
	stop, err := start()
	if err != nil {
		return err
	}
	s.sig, s.stop = sig, stop
	return nil
}

// halt stops the running instance, if any.
func (s *service) halt() {
	if s.stop != nil {
		s.stop()
	}
	s.sig, s.stop = "", nil
}
