package probe

import "hash/fnv"

// firstSlot is the target's first send time after now. The phase within the
// interval comes from a hash of the key: stable across restarts and reloads,
// and spread evenly over the interval across many targets.
func firstSlot(key string, interval, nowMono, nowWall int64) int64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	phase := int64(h.Sum64() % uint64(interval))
	// Next wall-clock time ≡ phase (mod interval), mapped onto mono time.
	wait := (phase - nowWall%interval + 2*interval) % interval
	return nowMono + wait
}

// schedule is a min-heap of targets by next send time (typed, so the hot
// path has no interface calls).
type schedule []*target

func (s schedule) swap(i, j int) {
	s[i], s[j] = s[j], s[i]
	s[i].index = i
	s[j].index = j
}

func (s schedule) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if s[p].next <= s[i].next {
			return
		}
		s.swap(p, i)
		i = p
	}
}

func (s schedule) down(i int) bool {
	start, n := i, len(s)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && s[r].next < s[l].next {
			m = r
		}
		if s[i].next <= s[m].next {
			break
		}
		s.swap(i, m)
		i = m
	}
	return i > start
}

func (s *schedule) push(t *target) {
	t.index = len(*s)
	*s = append(*s, t)
	s.up(t.index)
}

func (s schedule) fix(i int) {
	if !s.down(i) {
		s.up(i)
	}
}

func (s *schedule) remove(i int) {
	old := *s
	n := len(old) - 1
	if i != n {
		old.swap(i, n)
	}
	old[n] = nil
	*s = old[:n]
	if i != n {
		s.fix(i)
	}
}
