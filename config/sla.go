package config

import (
	"fmt"
	"time"
)

// Defaults for SLA objectives when the mesh file names none.
const (
	DefaultSLAAvailability = 99.9 // percent of minutes with data that must be good
	DefaultSLALoss         = 1.0  // percent of probes lost in one minute, at most
	DefaultSLARTTP95       = 300 * time.Millisecond
)

// DefaultSLAAWSPaths are the paths that run over AWS Direct Connect: breach
// windows on them are checked for AWS state changes.
var DefaultSLAAWSPaths = []string{"sitelink"}

// SLAConfig holds the objectives `probed sla` measures each site pair against.
//
//	sla:
//	  defaults: {availability: 99.9, loss: 1, rtt_p95: 300ms}
//	  objectives:
//	    - {source: us-east, target: us-west, path: sitelink, rtt_p95: 80ms}
//	  aws_paths: [sitelink]
type SLAConfig struct {
	Defaults   SLAObjectiveSpec   `yaml:"defaults"`
	Objectives []SLAObjectiveSpec `yaml:"objectives"`
	// AWSPaths lists the paths whose breach windows are compared with AWS
	// state (BGP, VIF, connection, MACsec). Default: [sitelink].
	AWSPaths []string `yaml:"aws_paths"`
}

// SLAObjectiveSpec is one objective as written. Source, Target, Path and
// Segment select the pairs it applies to (empty matches all); unset values
// fall back to the defaults.
type SLAObjectiveSpec struct {
	Source  string `yaml:"source"`
	Target  string `yaml:"target"`
	Path    string `yaml:"path"`
	Segment string `yaml:"segment"`

	// Availability is the minimum share of good minutes, in percent.
	Availability *float64 `yaml:"availability"`
	// Loss is the most probe loss a minute may have and still be good, in percent.
	Loss *float64 `yaml:"loss"`
	// RTTP95 is the highest 95th-percentile RTT a good minute may have.
	RTTP95 *Duration `yaml:"rtt_p95"`
}

// SLAObjective is the resolved objective for one pair, path and segment.
type SLAObjective struct {
	Availability float64       // percent
	Loss         float64       // percent
	RTTP95       time.Duration // per-minute p95 limit
}

// Objective returns the objective for a pair: the most specific matching
// entry (most of source/target/path/segment set) wins, the first written
// among equals; unset values come from the defaults.
func (s *SLAConfig) Objective(source, target, path, segment string) SLAObjective {
	o := SLAObjective{Availability: DefaultSLAAvailability, Loss: DefaultSLALoss, RTTP95: DefaultSLARTTP95}
	o = s.Defaults.apply(o)
	best, bestScore := -1, -1
	for i := range s.Objectives {
		e := &s.Objectives[i]
		score := 0
		ok := true
		for _, m := range [][2]string{{e.Source, source}, {e.Target, target}, {e.Path, path}, {e.Segment, segment}} {
			switch {
			case m[0] == "":
			case m[0] == m[1]:
				score++
			default:
				ok = false
			}
		}
		if ok && score > bestScore {
			best, bestScore = i, score
		}
	}
	if best >= 0 {
		o = s.Objectives[best].apply(o)
	}
	return o
}

func (e *SLAObjectiveSpec) apply(o SLAObjective) SLAObjective {
	if e.Availability != nil {
		o.Availability = *e.Availability
	}
	if e.Loss != nil {
		o.Loss = *e.Loss
	}
	if e.RTTP95 != nil {
		o.RTTP95 = e.RTTP95.D()
	}
	return o
}

// AWSPathSet returns the paths checked against AWS state.
func (s *SLAConfig) AWSPathSet() map[string]bool {
	p := s.AWSPaths
	if p == nil {
		p = DefaultSLAAWSPaths
	}
	m := make(map[string]bool, len(p))
	for _, x := range p {
		m[x] = true
	}
	return m
}

func (s *SLAConfig) validate(v *validator, path string) {
	s.Defaults.validate(v, path+".defaults", false)
	for i := range s.Objectives {
		s.Objectives[i].validate(v, fmt.Sprintf("%s.objectives[%d]", path, i), true)
	}
	for i, p := range s.AWSPaths {
		if !labelRE.MatchString(p) {
			v.at(fmt.Sprintf("%s.aws_paths[%d]", path, i), "path %s may only hold letters, digits and _.:-", quote(p))
		}
	}
}

func (e *SLAObjectiveSpec) validate(v *validator, path string, selectors bool) {
	if !selectors {
		for _, f := range [][2]string{{"source", e.Source}, {"target", e.Target}, {"path", e.Path}, {"segment", e.Segment}} {
			if f[1] != "" {
				v.at(path+"."+f[0], "the defaults apply to every pair; move %s: %s into an entry of sla.objectives", f[0], quote(f[1]))
			}
		}
	}
	if e.Availability != nil && (*e.Availability <= 0 || *e.Availability > 100) {
		v.at(path+".availability", "availability is a percentage above 0 and at most 100, got %g", *e.Availability)
	}
	if e.Loss != nil && (*e.Loss < 0 || *e.Loss > 100) {
		v.at(path+".loss", "loss is a percentage from 0 to 100, got %g", *e.Loss)
	}
	if e.RTTP95 != nil && e.RTTP95.D() <= 0 {
		v.at(path+".rtt_p95", "rtt_p95 must be a positive duration such as 150ms, got %s", e.RTTP95.D())
	}
	for _, f := range [][2]string{{"path", e.Path}, {"segment", e.Segment}} {
		if f[1] != "" && !labelRE.MatchString(f[1]) {
			v.at(path+"."+f[0], "%s %s may only hold letters, digits and _.:-", f[0], quote(f[1]))
		}
	}
	for _, f := range [][2]string{{"source", e.Source}, {"target", e.Target}} {
		if f[1] != "" && !siteNameRE.MatchString(f[1]) {
			v.at(path+"."+f[0], "site name %s may only hold letters, digits, '-', '_' and '.'", quote(f[1]))
		}
	}
	if selectors && e.Source != "" && e.Target != "" && e.Source == e.Target {
		v.at(path+".target", "source and target are both %s: a pair needs two sites", quote(e.Source))
	}
}
