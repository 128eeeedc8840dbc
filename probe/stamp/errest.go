package stamp

import (
	"fmt"
	"math"
	"time"
)

// ErrorEstimate is the 16-bit Error Estimate field of RFC 4656 section 4.1.2
// that STAMP reuses (RFC 8762 section 4.2.1):
//
//	 0                   1
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|S|Z|   Scale   |   Multiplier  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// S is set when the clock is synchronised to UTC; Z selects the timestamp
// format (0 = NTP, 1 = PTPv2); the error is Multiplier*2^(-32)*2^Scale seconds.
type ErrorEstimate uint16

const (
	eeSync = 1 << 15
	eeZ    = 1 << 14
)

// NewErrorEstimate encodes the clock state: synced sets S; maxErr is rounded
// up to the next representable value (an estimate may overstate the error,
// never understate it). Z is 0: probed always sends NTP timestamps.
func NewErrorEstimate(synced bool, maxErr time.Duration) ErrorEstimate {
	var e ErrorEstimate
	if synced {
		e |= eeSync
	}
	if maxErr <= 0 {
		return e | 1 // the smallest bound; the multiplier must not be zero (RFC 4656)
	}
	// Find the smallest scale with multiplier = ceil(err * 2^(32-scale)) <= 255.
	secs := maxErr.Seconds()
	for scale := 0; scale < 64; scale++ {
		m := math.Ceil(secs * math.Ldexp(1, 32-scale))
		if m <= 255 {
			if m < 1 {
				m = 1
			}
			return e | ErrorEstimate(scale)<<8 | ErrorEstimate(m)
		}
	}
	return e | 63<<8 | 255
}

// Synced reports the S bit.
func (e ErrorEstimate) Synced() bool { return e&eeSync != 0 }

// PTP reports the Z bit (timestamps in truncated PTPv2 format).
func (e ErrorEstimate) PTP() bool { return e&eeZ != 0 }

// Scale is the 6-bit scale.
func (e ErrorEstimate) Scale() uint8 { return uint8(e>>8) & 0x3f }

// Multiplier is the 8-bit multiplier.
func (e ErrorEstimate) Multiplier() uint8 { return uint8(e) }

// Error is the encoded error bound.
func (e ErrorEstimate) Error() time.Duration {
	s := math.Ldexp(float64(e.Multiplier()), int(e.Scale())-32)
	if s > math.MaxInt64/1e9 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(s * 1e9)
}

func (e ErrorEstimate) String() string {
	return fmt.Sprintf("S=%t Z=%t scale=%d multiplier=%d (±%s)", e.Synced(), e.PTP(), e.Scale(), e.Multiplier(), e.Error())
}
