package sla

import (
	"fmt"
	"time"
)

// ParsePeriod turns --month or --from/--to into [from, to) in UTC.
// month is YYYY-MM; from and to take RFC 3339, "YYYY-MM-DDTHH:MM" or
// "YYYY-MM-DD" (UTC); to defaults to now. A period that starts after now
// is refused (a flag error: there is nothing to report yet); one that ends
// after now is cut at now by Build.
func ParsePeriod(month, from, to string, now time.Time) (time.Time, time.Time, error) {
	now = now.UTC().Truncate(time.Minute)
	notYet := func(what string) error {
		return fmt.Errorf("%s has not started yet (it is %s UTC now): there is nothing to report", what, now.Format("2006-01-02 15:04"))
	}
	switch {
	case month != "" && (from != "" || to != ""):
		return time.Time{}, time.Time{}, fmt.Errorf("give either --month or --from/--to, not both")
	case month != "":
		m, err := time.Parse("2006-01", month)
		if err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("--month %q: want a month such as 2026-10", month)
		}
		if !m.Before(now) {
			return time.Time{}, time.Time{}, notYet("--month " + month)
		}
		return m, m.AddDate(0, 1, 0), nil
	case from == "":
		return time.Time{}, time.Time{}, fmt.Errorf("give the period: --month=YYYY-MM, or --from (and optionally --to)")
	}
	f, err := parseWhen(from)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("--from: %w", err)
	}
	if !f.Before(now) {
		return time.Time{}, time.Time{}, notYet("--from " + f.Format(time.RFC3339))
	}
	t := now
	if to != "" {
		if t, err = parseWhen(to); err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("--to: %w", err)
		}
	}
	if !t.After(f) {
		return time.Time{}, time.Time{}, fmt.Errorf("--from %s is not before --to %s", f.Format(time.RFC3339), t.Format(time.RFC3339))
	}
	return f, t, nil
}

func parseWhen(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use 2026-10-01, 2026-10-01T08:00 or RFC 3339 (2026-10-01T08:00:00Z)", s)
}
