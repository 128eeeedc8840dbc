package stamp

import "time"

// ntpEpochOffset is the number of seconds from 1900-01-01 (the NTP era 0
// epoch) to 1970-01-01.
const ntpEpochOffset = 2208988800

// NTPTime is a 64-bit NTP timestamp (RFC 5905): seconds since 1900 in the
// upper 32 bits, the binary fraction of a second in the lower 32 bits.
type NTPTime uint64

// ToNTP converts a wall-clock time to NTP format.
func ToNTP(t time.Time) NTPTime {
	sec := uint64(t.Unix() + ntpEpochOffset)
	frac := (uint64(t.Nanosecond()) << 32) / 1e9
	return NTPTime(sec<<32 | frac)
}

// Time converts the timestamp back to a wall-clock time. Era 0 only (valid
// until 2036), which is what STAMP implementations exchange today.
func (n NTPTime) Time() time.Time {
	sec := int64(n>>32) - ntpEpochOffset
	// Round the fraction to the nearest nanosecond so ToNTP(Time()) round-trips.
	nsec := (int64(uint32(n))*1e9 + 1<<31) >> 32
	return time.Unix(sec, nsec)
}

// Sub returns n - m as a duration, with full fraction precision.
func (n NTPTime) Sub(m NTPTime) time.Duration {
	d := int64(n - m) // two's complement handles n < m
	// d is in units of 2^-32 s; convert without overflowing for |d| < 2^31 s.
	sec := d >> 32
	frac := d & 0xffffffff
	return time.Duration(sec)*time.Second + time.Duration((frac*1e9+1<<31)>>32)
}
