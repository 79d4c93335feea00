package transport

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrClosed is returned by a Conn's methods after Close, and by those of a
// wrapped connection once it is lost.
var ErrClosed = errors.New("amqprpc: connection closed")

// Backoff bounds the waits between reconnection attempts: the first retry
// comes after Min, each next one after twice as long up to Max, each with up
// to 25% of random jitter so that many clients do not reconnect in step.
type Backoff struct{ Min, Max time.Duration }

// DefaultBackoff is used where Config.Backoff is zero.
var DefaultBackoff = Backoff{Min: 50 * time.Millisecond, Max: 5 * time.Second}

func (b Backoff) next(prev time.Duration) time.Duration {
	d := prev * 2
	if prev == 0 {
		d = b.Min
	}
	if d > b.Max {
		d = b.Max
	}
	return d + time.Duration(rand.Int64N(int64(d)/4+1))
}

// Conn is an AMQP connection that heals itself: when the broker or the
// network drops it, Conn dials again (with backoff and jitter) until it
// succeeds or Close is called. Users open channels with Channel and watch
// them close; a closed channel means "open a new one", which waits for the
// next connection. Conn is safe for concurrent use.
type Conn struct {
	urls    []string // the broker's nodes; tried in a random order on each dial
	url     string   // the one connected to last, for logs
	cfg     Config
	log     *slog.Logger
	redial  bool // false for a wrapped connection: a loss is final
	backoff Backoff

	done   chan struct{} // closed by Close
	ctx    context.Context
	cancel context.CancelFunc // ends ctx, interrupting a redial, with Close
	wg     sync.WaitGroup

	reconnects atomic.Uint64 // successful redials

	mu sync.Mutex
	// protects conn, cork, frameMax, up and lost
	conn     *amqp.Connection // nil while down
	cork     *corkConn        // conn's network connection; nil for a wrapped one
	frameMax int              // conn's negotiated frame_max in bytes (0: none), read once when it came up
	up       chan struct{}    // closed while conn is live; replaced when it is lost
	lost     error            // set when a wrapped connection is gone for good
}

// Open dials rawURL, one broker URL or several separated by commas (see
// SplitURLs), and keeps the connection up until Close; each dial, the first
// and every redial, tries the URLs in a new random order until one
// answers. The first dial is synchronous: its error (wrong URL,
// credentials, TLS; every URL's when there are several) is returned.
func Open(rawURL string, cfg Config, log *slog.Logger) (*Conn, error) {
	urls, err := SplitURLs(rawURL)
	if err != nil {
		return nil, err
	}
	conn, cork, url, err := dialAny(context.Background(), urls, cfg)
	if err != nil {
		return nil, err
	}
	b := cfg.Backoff
	if b.Min <= 0 || b.Max < b.Min {
		b = DefaultBackoff
	}
	return start(&Conn{urls: urls, url: url, cfg: cfg, log: log, redial: true, backoff: b}, conn, cork), nil
}

// Wrap adopts a connection the caller owns: no redial, and Close leaves conn
// open. Once conn closes, Channel returns ErrClosed.
func Wrap(conn *amqp.Connection, log *slog.Logger) *Conn {
	// c.ctx is unused: a wrapped connection never redials.
	return start(&Conn{log: log}, conn, nil)
}

func start(c *Conn, conn *amqp.Connection, cork *corkConn) *Conn {
	c.done = make(chan struct{})
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.up = make(chan struct{})
	c.setUp(conn, cork)
	c.wg.Add(1)
	go c.watch(conn)
	return c
}

func (c *Conn) setUp(conn *amqp.Connection, cork *corkConn) {
	frameMax := conn.Config.FrameSize
	c.mu.Lock()
	c.conn, c.cork, c.frameMax = conn, cork, frameMax
	close(c.up)
	c.mu.Unlock()
}

// watch waits for the live connection to close and redials; it is the Conn's
// one goroutine.
func (c *Conn) watch(conn *amqp.Connection) {
	var cork *corkConn
	defer c.wg.Done()
	for {
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		var reason *amqp.Error
		select {
		case reason = <-closed:
		case <-c.done:
			if c.redial {
				c.closeBounded(conn)
			}
			return
		}
		c.mu.Lock()
		c.conn = nil
		c.up = make(chan struct{})
		if !c.redial {
			c.lost = ErrClosed
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		c.log.Warn("amqprpc: connection lost; reconnecting", "url", Redact(c.url), "reason", reason)

		var wait time.Duration
		var rl retryLog
		for {
			wait = c.backoff.next(wait)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.done:
				t.Stop()
				return
			}
			next, nextCork, url, err := dialAny(c.ctx, c.urls, c.cfg)
			if err == nil {
				conn, cork, c.url = next, nextCork, url
				break
			}
			rl.failed(c.log, "amqprpc: reconnecting failed; retrying", "err", err, "retry_in", c.backoff.next(wait))
		}
		c.setUp(conn, cork)
		c.reconnects.Add(1)
		c.log.Info("amqprpc: reconnected", "url", Redact(c.url))
	}
}

// Reconnects returns how many times the Conn has reconnected after losing
// its connection.
func (c *Conn) Reconnects() uint64 { return c.reconnects.Load() }

// Channel opens a channel on the live connection, waiting for one while
// reconnecting, until ctx ends or the Conn is closed (ErrClosed).
func (c *Conn) Channel(ctx context.Context) (*amqp.Channel, error) {
	ch, _, err := c.channel(ctx)
	return ch, err
}

// channel is Channel, with the frame_max negotiated by the connection the
// channel is on, in bytes (0: no limit).
func (c *Conn) channel(ctx context.Context) (*amqp.Channel, int, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		select {
		case <-c.done:
			return nil, 0, ErrClosed // a wrapped connection may still be open
		default:
		}
		c.mu.Lock()
		conn, up, lost, frameMax := c.conn, c.up, c.lost, c.frameMax
		c.mu.Unlock()
		if lost != nil {
			return nil, 0, lost
		}
		if conn != nil {
			ch, err := conn.Channel()
			if err == nil {
				return ch, frameMax, nil
			}
			// A connection that dies while the channel opens fails it with
			// its shutdown error (501, 320), not ErrClosed.
			if !errors.Is(err, amqp.ErrClosed) && !conn.IsClosed() {
				return nil, 0, err
			}
			// The connection died under us: wait for watch to notice.
			select {
			case <-c.done:
				return nil, 0, ErrClosed
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		select {
		case <-up:
		case <-c.done:
			return nil, 0, ErrClosed
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

// Cork gathers the writes to the current connection until the returned
// func is called, which sends them in one write. Call it around a burst of
// publishes or acks that does not wait for anything.
func (c *Conn) Cork() (uncork func()) {
	c.mu.Lock()
	cc := c.cork
	c.mu.Unlock()
	if cc == nil {
		return func() {}
	}
	cc.cork()
	return cc.uncorkFn
}

// closeTimeout bounds how long closing a connection waits for the broker.
const closeTimeout = 5 * time.Second

// closeBounded closes conn, waiting at most closeTimeout for the broker's
// close-ok. A broker that blocks the connection (memory alarm) stops reading
// it, and never answers. Past closeTimeout the network connection is cut,
// which ends the wait at once. (amqp091-go's CloseDeadline cannot do it: it
// needs a net.Conn under the connection, and dial gives it a deadlineConn.)
func (c *Conn) closeBounded(conn *amqp.Connection) {
	closed := make(chan struct{})
	go func() {
		_ = conn.Close()
		close(closed)
	}()
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-closed:
		return
	case <-t.C:
	}
	c.mu.Lock()
	cork := c.cork
	c.mu.Unlock()
	if cork != nil {
		_ = cork.Close()
	}
	<-closed
}

// Close stops reconnecting (interrupting a dial in progress), closes the
// connection (unless it was wrapped) and waits for the Conn's goroutine. It
// is idempotent.
func (c *Conn) Close() error {
	c.mu.Lock()
	select {
	case <-c.done:
		c.mu.Unlock()
		return nil
	default:
		close(c.done)
		c.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}
