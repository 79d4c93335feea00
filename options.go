package amqprpc

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/internal/transport"
	pubtransport "github.com/amqprpc/amqprpc/transport"
)

// Option configures a [Client] or a [Server]. Options that only make sense
// on one side are ignored by the other.
type Option func(*options) error

type options struct {
	codec         codec.Codec
	prefetch      int
	logger        *slog.Logger
	clientID      string
	replyExpiry   time.Duration
	tls           *tls.Config
	callTimeout   time.Duration
	heartbeat     time.Duration
	maxBody       int
	connName      string
	fanout        bool // set by package fanout through internal/link
	dedupe        time.Duration
	replyCache    int
	persistent    bool
	queueType     QueueType
	deliveryLimit int
	conn          *pubtransport.Conn // shared connections; nil: open our own

	// OpenTelemetry; nil: the global ones (see telemetry.go)
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	propagator     propagation.TextMapPropagator
}

// Defaults of every option, as documented on each With… function.
const (
	DefaultPrefetch    = 128
	DefaultReplyExpiry = 5 * time.Minute
	DefaultCallTimeout = 60 * time.Second
	DefaultHeartbeat   = 10 * time.Second
	DefaultMaxBodySize = 4 << 20
	DefaultDedupWindow = time.Minute
	DefaultReplyCache  = 16 << 20
	// DefaultDeliveryLimit is RabbitMQ 4.0's own default for quorum queues.
	DefaultDeliveryLimit = 20
)

// prepare reads opts and names namespace's broker objects: the preamble of
// every constructor.
func prepare(namespace string, opts []Option) (*options, names, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, names{}, err
	}
	n, err := newNames(namespace, o)
	return o, n, err
}

// id is the client id: WithClientID's, or a new random one.
func (o *options) id() string {
	if o.clientID != "" {
		return o.clientID
	}
	return randomHex(8)
}

func newOptions(opts []Option) (*options, error) {
	o := &options{
		codec:         codec.MsgPack,
		prefetch:      DefaultPrefetch,
		logger:        slog.New(slog.DiscardHandler),
		replyExpiry:   DefaultReplyExpiry,
		callTimeout:   DefaultCallTimeout,
		heartbeat:     DefaultHeartbeat,
		maxBody:       DefaultMaxBodySize,
		dedupe:        DefaultDedupWindow,
		replyCache:    DefaultReplyCache,
		deliveryLimit: DefaultDeliveryLimit,
	}
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// WithCodec sets the body encoding a client uses for its requests (a server
// answers each request in the encoding it came in, and also accepts c).
// Default: [codec.MsgPack]. A nil c is an error.
func WithCodec(c codec.Codec) Option {
	return func(o *options) error {
		if c == nil {
			return errors.New("amqprpc: WithCodec(nil)")
		}
		o.codec = c
		return nil
	}
}

// WithPrefetch sets how many requests a server takes from the broker at once,
// which is also how many handlers run concurrently. Default: 128
// ([DefaultPrefetch]). Zero or negative is an error: an unlimited prefetch
// lets one server take the whole backlog.
func WithPrefetch(n int) Option {
	return func(o *options) error {
		if n <= 0 || n > 65535 {
			return fmt.Errorf("amqprpc: WithPrefetch(%d): must be 1..65535", n)
		}
		o.prefetch = n
		return nil
	}
}

// WithLogger sets where the library reports what it cannot return as an
// error: dropped messages, refused requests, lost connections. Default: no
// logging. A nil l means the default.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			l = slog.New(slog.DiscardHandler)
		}
		o.logger = l
		return nil
	}
}

// WithClientID sets the client's id: the routing key of its replies and part
// of its reply queue's name, rpc_<namespace>_<id>_response. Default: 16
// random hex characters, new for every Dial. Two live clients must never
// share an id (each would take, and drop, the other's replies); reuse an id
// only to pick up a reply queue a previous process left behind. An empty id
// means the default. An id over 100 bytes is an error, and so is, at Dial,
// one that makes the reply queue's name longer than AMQP's 255 bytes
// (matching [ErrTooLong]).
func WithClientID(id string) Option {
	return func(o *options) error {
		if len(id) > 100 {
			return fmt.Errorf("amqprpc: WithClientID: id longer than 100 bytes")
		}
		o.clientID = id
		return nil
	}
}

// WithReplyQueueExpiry sets how long the broker keeps a client's reply queue
// once nobody consumes it (the queue's x-expires). It must outlast any
// network outage the client should survive. Default: 5 minutes
// ([DefaultReplyExpiry]). Values under one second, or over RabbitMQ's
// 2^32-1 ms (about 49 days; matches [ErrTooLong]), are an error.
func WithReplyQueueExpiry(d time.Duration) Option {
	return func(o *options) error {
		if d < time.Second {
			return fmt.Errorf("amqprpc: WithReplyQueueExpiry(%v): must be at least 1s", d)
		}
		if err := transport.CheckExpiry("WithReplyQueueExpiry", d); err != nil {
			return err
		}
		o.replyExpiry = d
		return nil
	}
}

// WithTLS sets the TLS configuration of amqps:// connections. Default: nil,
// which means Go's defaults with certificate verification on; it is only
// turned off by a config with InsecureSkipVerify set by the caller.
func WithTLS(cfg *tls.Config) Option {
	return func(o *options) error {
		o.tls = cfg
		return nil
	}
}

// WithCallTimeout sets the deadline of calls that carry none of their own:
// Call, Go, and CallContext with a context without deadline. A call that
// gets no reply in time fails, and its request expires in the broker.
// Default: 60 s ([DefaultCallTimeout]), as in amphora. Zero means no default
// timeout; negative is an error.
func WithCallTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("amqprpc: WithCallTimeout(%v): negative", d)
		}
		o.callTimeout = d
		return nil
	}
}

// WithHeartbeat sets the AMQP heartbeat interval, which detects a dead
// broker or network. Default: 10 s ([DefaultHeartbeat]). Under 1 s is an
// error (without heartbeats a dead peer can go unnoticed for minutes). The
// broker may negotiate a shorter one (the lower of the two values, per
// RabbitMQ's heartbeats guide); both sides send a heartbeat every half
// interval when idle, and a connection that receives nothing for 1.5 to 1.9
// intervals is taken for dead and dialed again.
func WithHeartbeat(d time.Duration) Option {
	return func(o *options) error {
		if d < time.Second {
			return fmt.Errorf("amqprpc: WithHeartbeat(%v): must be at least 1s", d)
		}
		o.heartbeat = d
		return nil
	}
}

// WithMaxBodySize sets the largest message body, in bytes, on both sides
// of a call. A server refuses a larger request with an error reply,
// without decoding it, and replaces a reply that encodes larger with an
// error reply: the handler has run by then, so keep replies that may grow
// (lists, say) well within the limit or page them. A client fails a call
// whose args encode larger with [ErrTooLarge] before sending it, and one
// whose reply is larger with [ErrBadReply] and [ErrTooLarge], without
// decoding it. Set the same limit on clients and servers. Default: 4 MiB
// ([DefaultMaxBodySize]), well under RabbitMQ's max_message_size (16 MiB
// on 4.x); zero or negative is an error.
func WithMaxBodySize(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("amqprpc: WithMaxBodySize(%d): must be positive", n)
		}
		o.maxBody = n
		return nil
	}
}

// WithConnectionName sets the name the broker's management UI shows for
// the connections. Default: "amqprpc client <id>" or "amqprpc server".
func WithConnectionName(name string) Option {
	return func(o *options) error {
		o.connName = name
		return nil
	}
}

// WithDedupWindow sets how long a server remembers the calls it answered, so
// that a request it receives again (redelivered after a lost connection, or
// published again by a client that lost the broker's confirm or its reply
// queue) is answered again without running its handler twice (see
// [WithReplyCache]). A call is known by its reply_to, message_id,
// correlation_id, type, content_type and body: a request without
// message_id is never taken for a duplicate. A duplicate that arrives while its
// original still runs waits for the original's reply. Each remembered call
// costs about 20 bytes, for one to two windows. Duplicates that reach
// another server process, or come after a server restart, still run again
// (at-least-once). Default: 1 minute ([DefaultDedupWindow]). Zero turns
// duplicate detection off; negative is an error.
func WithDedupWindow(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("amqprpc: WithDedupWindow(%v): negative", d)
		}
		o.dedupe = d
		return nil
	}
}

// WithReplyCache sets how many bytes of replies a server keeps, for its
// dedupe window ([WithDedupWindow]), to answer a duplicate of an answered
// call again: a client whose reply queue was lost publishes its pending
// calls again, and should get the replies that were lost with the queue
// without running the calls twice. That holds where the copy reaches the
// server process that ran the call, within its dedupe window; elsewhere
// the call runs again (at-least-once). The most recent replies are kept;
// a reply larger than a quarter of n is not. A duplicate whose reply is
// not kept is answered with an error saying that the call ran already. A
// fanout server answers no duplicate: CallAll would count it twice.
// Default: 16 MiB ([DefaultReplyCache]) per server. Zero keeps no replies;
// negative is an error.
func WithReplyCache(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("amqprpc: WithReplyCache(%d): negative", n)
		}
		o.replyCache = n
		return nil
	}
}

// QueueType is RabbitMQ's type of a queue, its x-queue-type argument
// (rabbitmq.com/docs/quorum-queues).
type QueueType string

// Queue types for [WithQueueType].
const (
	// ClassicQueue lives on one node: when that node is down, its calls
	// wait or fail until it is back.
	ClassicQueue QueueType = "classic"
	// QuorumQueue is replicated over a cluster's nodes (Raft): it survives
	// the loss of a minority of them, its leader moving to another node.
	// It caps redeliveries with a delivery limit ([WithDeliveryLimit]).
	QuorumQueue QueueType = "quorum"
)

// WithQueueType sets the type of the request queues a Client or Server
// creates: the namespace's main request queue and the queues of
// CreateRequestQueue. Use QuorumQueue on a cluster. A queue that exists
// already is used as it is, whatever its type, so that operators may
// declare the queues themselves, or set a default queue type on the
// vhost; its type is not changed (delete it to change it). Default: none
// given, which is the vhost's default queue type, classic unless set.
// Reply queues and fanout server queues are not affected.
func WithQueueType(t QueueType) Option {
	return func(o *options) error {
		if t != ClassicQueue && t != QuorumQueue {
			return fmt.Errorf("amqprpc: WithQueueType(%q): not %q or %q", t, ClassicQueue, QuorumQueue)
		}
		o.queueType = t
		return nil
	}
}

// WithDeliveryLimit sets the x-delivery-limit of the quorum request queues
// a Client or Server creates (WithQueueType(QuorumQueue)): a request
// delivered n times without being settled (each server that took it
// crashed or lost its connection before answering) is then dropped, or
// dead-lettered if the queue has a dead-letter exchange, instead of
// taking down server after server. Requests put back after
// ErrIgnoreRequest are published anew and do not count. Default: 20
// ([DefaultDeliveryLimit]), as RabbitMQ 4.0 sets for quorum queues.
// Under 1 is an error.
func WithDeliveryLimit(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("amqprpc: WithDeliveryLimit(%d): must be at least 1", n)
		}
		o.deliveryLimit = n
		return nil
	}
}

// WithConnection makes a Client or Server (of this package or of package
// fanout) use channels on conn, made once with transport.Dial and shared
// by any number of them, instead of opening two connections of its own;
// the url given to Dial or NewServer must then be empty. Closing the
// Client or Server closes its channels, never conn: the caller closes
// conn after them. WithTLS, WithHeartbeat and WithConnectionName are then
// conn's business (transport.Config) and ignored. Default: nil, own
// connections.
func WithConnection(conn *pubtransport.Conn) Option {
	return func(o *options) error {
		if conn == nil {
			return errors.New("amqprpc: WithConnection(nil)")
		}
		o.conn = conn
		return nil
	}
}

// WithPersistent makes requests persistent (delivery mode 2), and servers
// answer persistent requests with persistent replies, so that calls waiting
// in durable queues survive a broker restart. It costs the broker a disk
// write per message. Default: off (transient messages, lost if the broker
// restarts; calls then fail by their deadline).
func WithPersistent() Option {
	return func(o *options) error {
		o.persistent = true
		return nil
	}
}
