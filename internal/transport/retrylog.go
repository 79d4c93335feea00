package transport

import (
	"log/slog"
	"time"
)

// retryLogEvery is how often a retry loop that keeps failing logs again.
const retryLogEvery = 30 * time.Second

// retryLog logs the failures of one retry loop at Warn without flooding
// the log: the first failure after a success, then at most one line per
// retryLogEvery, counting the tries in between. It belongs to the loop's
// goroutine.
type retryLog struct {
	failing bool
	last    time.Time // of the last line logged
	tries   int       // failed since that line
}

// failed records a failed try and logs it if due; args are slog's
// key-value pairs.
func (r *retryLog) failed(log *slog.Logger, msg string, args ...any) {
	r.tries++
	if r.failing && time.Since(r.last) < retryLogEvery {
		return
	}
	if r.failing {
		msg += " (still failing)"
	}
	log.Warn(msg, append(args, "tries", r.tries)...)
	r.failing, r.last, r.tries = true, time.Now(), 0
}

// ok records a success: the next failure is logged at once.
func (r *retryLog) ok() { r.failing, r.tries = false, 0 }
