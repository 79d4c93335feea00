package amqprpc

import (
	"fmt"
	"log/slog"
	"net/rpc"
	"sync"
	"time"

	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/internal/transport"
)

// serverCodec reads one consumer's requests, answers them and settles them.
// Server drives it through next, decode and respond, one goroutine per call;
// NewServerCodec users drive it through net/rpc's ServerCodec methods.
type serverCodec struct {
	names
	custom  codec.Codec // accepted besides the built-in codecs
	maxBody int
	log     *slog.Logger
	pub     publisher
	acker   *transport.Acker // sends the acks, merging those of a burst
	seen    *dedupe          // nil: no duplicate detection
	tel     *telemetry
	stream  *transport.Stream
	release func() error // stops consuming (unacked deliveries go back), once
	cancel  func()       // asks the broker for no more deliveries

	stopping  chan struct{}   // closed by stop: no further reads
	abandon   <-chan struct{} // see serverCodecConfig
	stopOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
	lost      error          // set by the reader when deliveries ended on their own
	inflight  sync.WaitGroup // requests taken and not yet settled
	gate      sync.RWMutex   // Close stops under it: next's inflight.Add comes before Close's Wait

	quota // of ReceiveFromQueue

	// net/rpc's ServerCodec side (NewServerCodec): seq and cur belong to
	// its one reader goroutine; WriteResponse runs on the handlers'.
	seq uint64
	cur *request

	mu sync.Mutex
	// protects pending
	pending map[uint64]*request
}

type serverCodecConfig struct {
	names
	opts  *options
	pub   publisher
	acker *transport.Acker
	seen  *dedupe
	tel   *telemetry // nil: the codec's own
	limit int        // stop after this many well-formed calls; <= 0: no limit
	// abandon, if not nil, is closed when Close must stop waiting for
	// replies to be confirmed (Server.Shutdown's context ended).
	abandon <-chan struct{}
}

func newServerCodec(cfg serverCodecConfig) *serverCodec {
	if cfg.tel == nil {
		cfg.tel = newTelemetry(cfg.opts, true)
	}
	return &serverCodec{
		tel:      cfg.tel,
		names:    cfg.names,
		custom:   cfg.opts.codec,
		maxBody:  cfg.opts.maxBody,
		log:      cfg.opts.logger,
		pub:      cfg.pub,
		acker:    cfg.acker,
		seen:     cfg.seen,
		quota:    newQuota(cfg.limit),
		abandon:  cfg.abandon,
		stopping: make(chan struct{}),
		pending:  make(map[uint64]*request),
	}
}

// attach gives the codec the consumer whose deliveries it reads; closing
// the codec closes it.
func (c *serverCodec) attach(k *transport.Consumer) {
	c.stream = k.Stream()
	c.release = k.Close
	c.cancel = k.Cancel
}

// stop makes next (and ReadRequestHeader) return io.EOF.
func (c *serverCodec) stop() { c.stopOnce.Do(func() { close(c.stopping) }) }

// stopped reports whether stop was called.
func (c *serverCodec) stopped() bool { return closed(c.stopping) }

// closeWait bounds how long Close waits for the confirms of replies already
// published.
const closeWait = 30 * time.Second

// Close waits until every reply already written is confirmed and its request
// settled (at most closeWait, or until abandon), then stops consuming: deliveries not yet read
// go back to the queue. It is idempotent.
func (c *serverCodec) Close() error {
	c.closeOnce.Do(func() {
		c.gate.Lock() // a request being taken is counted before Wait starts
		c.stop()
		c.gate.Unlock()
		settled := make(chan struct{})
		go func() { c.inflight.Wait(); close(settled) }()
		select {
		case <-settled:
		case <-time.After(closeWait):
			c.log.Warn("amqprpc: closing with replies still unconfirmed; their requests will be redelivered")
		case <-c.abandon:
			c.log.Warn("amqprpc: shutting down with calls unanswered or replies unconfirmed; their requests will be redelivered")
		}
		// The last acks may still be gathered in a burst of confirms: they
		// must reach the channel before its close does, or the broker puts
		// those requests back and another server runs them again.
		c.acker.Sync()
		if c.release != nil {
			c.closeErr = c.release()
		}
	})
	return c.closeErr
}

// ReadRequestHeader returns the next request, as next does (see there), for
// net/rpc's ServeCodec: a malformed request never becomes an error, which
// would end ServeCodec.
func (c *serverCodec) ReadRequestHeader(r *rpc.Request) error {
	req, err := c.next()
	if err != nil {
		return err
	}
	c.seq++
	c.mu.Lock()
	c.pending[c.seq] = req
	c.mu.Unlock()
	c.cur = req
	*r = rpc.Request{ServiceMethod: req.d.Type, Seq: c.seq}
	return nil
}

// ReadRequestBody decodes the current request's args into body; a nil body
// discards them. A body that does not decode is answered by net/rpc with an
// error reply, and the request is then rejected instead of acked.
func (c *serverCodec) ReadRequestBody(body any) error {
	req := c.cur
	c.cur = nil
	if req == nil {
		return nil
	}
	return c.decode(req, body)
}

// WriteResponse publishes the reply to request r.Seq; see respond. net/rpc
// serialises calls to it.
func (c *serverCodec) WriteResponse(r *rpc.Response, body any) error {
	c.mu.Lock()
	req := c.pending[r.Seq]
	delete(c.pending, r.Seq)
	c.mu.Unlock()
	if req == nil {
		return fmt.Errorf("amqprpc: response to unknown request %d", r.Seq)
	}
	return c.respond(req, r.Error, body)
}
