// Package transport holds the AMQP connections that amqprpc's clients and
// servers run on. By default each amqprpc.Dial and amqprpc.NewServer opens
// connections of its own; a process with many clients and servers can
// instead open one [Conn] and pass it to all of them with
// amqprpc.WithConnection, as RabbitMQ advises: few long-lived connections,
// many channels (rabbitmq.com/docs/connections).
package transport

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/amqprpc/amqprpc/internal/link"
	itransport "github.com/amqprpc/amqprpc/internal/transport"
)

// Config configures a [Conn]. The zero value is valid.
type Config struct {
	// TLS configures amqps:// URLs. Nil means Go's defaults, which verify
	// the broker's certificate.
	TLS *tls.Config
	// Heartbeat is the AMQP heartbeat interval, which detects a dead
	// broker or network: a connection that receives nothing for 1.5 to 1.9
	// intervals is dialed again. Zero means 10 s; under 1 s is an error.
	Heartbeat time.Duration
	// Name is the connections' name in the management UI. Empty means
	// "amqprpc shared".
	Name string
	// Logger receives lost and restored connections. Nil means no logging.
	Logger *slog.Logger
}

// DefaultHeartbeat is the heartbeat of a Config that sets none.
const DefaultHeartbeat = 10 * time.Second

// Conn is a pair of AMQP connections to one broker or cluster, one to
// publish and one to consume (so that a broker that blocks publishers
// during a memory or disk alarm cannot stop deliveries), shared by any
// number of amqprpc clients and servers, each of which uses channels of
// its own on them. Conn redials a lost connection with backoff and jitter,
// and the clients and servers on it then resume. It is safe for
// concurrent use.
type Conn struct {
	pub, sub  *itransport.Conn
	closeOnce sync.Once
	closeErr  error
}

// Dial connects to the broker at url: one amqp:// or amqps:// URL, or a
// cluster's nodes separated by commas, tried in a random order on every
// dial. It blocks until both connections are open, and returns the first
// dial's error (wrong URL, credentials, TLS; without passwords). The
// caller closes the Conn, after the clients and servers that use it.
func Dial(url string, cfg Config) (*Conn, error) {
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Heartbeat < time.Second {
		return nil, errors.New("amqprpc: transport.Config.Heartbeat under 1s")
	}
	if cfg.Name == "" {
		cfg.Name = "amqprpc shared"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := itransport.Config{TLS: cfg.TLS, Heartbeat: cfg.Heartbeat, Name: cfg.Name}
	pub, err := itransport.Open(url, c, log)
	if err != nil {
		return nil, err
	}
	sub, err := itransport.Open(url, c, log)
	if err != nil {
		_ = pub.Close()
		return nil, err
	}
	return &Conn{pub: pub, sub: sub}, nil
}

// Close closes both connections. Clients and servers still using them fail
// their calls with rpc.ErrShutdown and stop serving; close them first. It
// is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { c.closeErr = errors.Join(c.pub.Close(), c.sub.Close()) })
	return c.closeErr
}

func init() {
	link.Conns = func(c any) (pub, sub *itransport.Conn) {
		conn := c.(*Conn)
		return conn.pub, conn.sub
	}
}
