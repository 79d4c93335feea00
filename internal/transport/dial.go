// Package transport holds amqprpc's AMQP plumbing: connections, publisher
// confirms and the redaction of credentials from URLs. It knows nothing of
// net/rpc.
package transport

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Config is what a connection needs beyond its URL.
type Config struct {
	// TLS is used for amqps:// URLs. Nil means a default tls.Config, which
	// verifies the broker's certificate.
	TLS *tls.Config
	// Heartbeat is the AMQP heartbeat interval; it detects a dead peer.
	Heartbeat time.Duration
	// Name is shown as the connection name in the management UI.
	Name string
	// Backoff paces reconnection; zero means DefaultBackoff.
	Backoff Backoff
}

// handshakeTimeout bounds the TCP connect and the TLS and AMQP handshakes,
// unless the URL's connection_timeout says otherwise.
const handshakeTimeout = 30 * time.Second

// defaultHeartbeat is the heartbeat amqp.DialConfig asks for (amqp091-go
// v1.16.0), which Open does not.
const defaultHeartbeat = 10 * time.Second

// maxFrameSize is the frame_max a connection asks for, in bytes: the
// broker's own wins when it is smaller (RabbitMQ's default is 131072).
// A broker that offers no limit (0) gets this one, which bounds what
// amqp091-go allocates for a frame, and for a body before it arrives.
const maxFrameSize = 64 << 20

// dial opens one AMQP connection and returns it with the corkable network
// connection under it; ending ctx interrupts it. Its errors never contain
// the password.
//
// It does what amqp.DialConfig does (the URL's vhost, credentials,
// auth_mechanism, heartbeat, channel_max, connection_timeout and TLS files
// count alike) but hands amqp.Open a connection without a SetReadDeadline
// method, and keeps the read deadline itself (see deadlineConn).
func dial(ctx context.Context, rawURL string, cfg Config) (*amqp.Connection, *corkConn, error) {
	conn, cc, err := dialURL(ctx, rawURL, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("amqprpc: dial %s: %w", Redact(rawURL), err)
	}
	return conn, cc, nil
}

func dialURL(ctx context.Context, rawURL string, cfg Config) (*amqp.Connection, *corkConn, error) {
	uri, err := ParseURI(rawURL)
	if err != nil {
		return nil, nil, err
	}
	config, err := amqpConfig(rawURL, uri, cfg)
	if err != nil {
		return nil, nil, err
	}
	timeout := handshakeTimeout
	if uri.ConnectionTimeout > 0 {
		timeout = time.Duration(uri.ConnectionTimeout) * time.Millisecond
	}
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port)))
	if err != nil {
		return nil, nil, err
	}
	// amqp.Open clears this deadline once the handshake is done; until
	// then ctx can cut the handshake short too.
	_ = nc.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	cc := newCorkConn(nc, stop)
	var under net.Conn = cc
	if uri.Scheme == "amqps" {
		tlsConfig, err := tlsConfigFor(uri, cfg.TLS)
		if err != nil {
			_ = cc.Close()
			return nil, nil, err
		}
		tc := tls.Client(cc, tlsConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = cc.Close()
			return nil, nil, err
		}
		under = tc
	}
	dc := &deadlineConn{conn: under}
	conn, err := amqp.Open(dc, config)
	if err != nil {
		_ = dc.Close()
		return nil, nil, err
	}
	// amqp091-go sends heartbeats every half interval; like it, give the
	// broker three of those before the link is taken for dead.
	if t := 3 * conn.Config.Heartbeat / 2; t > 0 {
		dc.timeout.Store(int64(t))
		// The reader may be in a Read begun before the timeout was
		// known, and Open cleared the handshake's deadline.
		_ = under.SetReadDeadline(time.Now().Add(t + t/4))
	}
	return conn, cc, nil
}

// amqpConfig is the amqp.Config for uri (rawURL parsed): what
// amqp.DialConfig would derive from it, with cfg's heartbeat (the URL's
// heartbeat parameter wins, as in DialConfig).
func amqpConfig(rawURL string, uri amqp.URI, cfg Config) (amqp.Config, error) {
	props := amqp.NewConnectionProperties()
	if cfg.Name != "" {
		props.SetClientConnectionName(cfg.Name)
	}
	config := amqp.Config{
		Vhost:      uri.Vhost,
		ChannelMax: uri.ChannelMax,
		// The broker's frame_max, rather than the 128 KiB DialConfig asks
		// for: a message comes in one content header frame however large
		// its properties, and amqp091-go closes the connection on a frame
		// over the size negotiated. A broker whose frame_max is larger
		// takes such a message from a foreign client, and a consumer
		// with a smaller one would be closed by it on every delivery.
		FrameSize:  maxFrameSize,
		Heartbeat:  cmp.Or(cfg.Heartbeat, defaultHeartbeat),
		Properties: props,
		Locale:     "en_US",
	}
	// amqp.URI keeps the heartbeat in an unexported field; ParseURI has
	// checked the parameter already.
	if u, err := url.Parse(rawURL); err == nil && u.Query().Has("heartbeat") {
		s, _ := strconv.ParseUint(u.Query().Get("heartbeat"), 10, 16)
		config.Heartbeat = time.Duration(s) * time.Second
	}
	for _, m := range uri.AuthMechanism {
		switch strings.ToUpper(m) {
		case "PLAIN":
			config.SASL = append(config.SASL, uri.PlainAuth())
		case "AMQPLAIN":
			config.SASL = append(config.SASL, uri.AMQPlainAuth())
		case "EXTERNAL":
			config.SASL = append(config.SASL, &amqp.ExternalAuth{})
		default:
			return amqp.Config{}, fmt.Errorf("unsupported auth_mechanism: %v", m)
		}
	}
	if config.SASL == nil {
		config.SASL = []amqp.Authentication{uri.PlainAuth()}
	}
	return config, nil
}

// tlsConfigFor is the TLS configuration for an amqps:// uri: a clone of
// the caller's (never shared: its ServerName is set per node), or, without
// one, amqp091-go's from the URL's cacertfile, certfile, keyfile and
// server_name_indication.
func tlsConfigFor(uri amqp.URI, given *tls.Config) (*tls.Config, error) {
	var c *tls.Config
	if given != nil {
		c = given.Clone()
	} else {
		c = &tls.Config{ServerName: uri.ServerName, MinVersion: tls.VersionTLS12}
		if uri.CACertFile != "" {
			pem, err := os.ReadFile(uri.CACertFile)
			if err != nil {
				return nil, fmt.Errorf("read CA certificate: %w", err)
			}
			c.RootCAs = x509.NewCertPool()
			c.RootCAs.AppendCertsFromPEM(pem)
		}
		if uri.CertFile != "" && uri.KeyFile != "" {
			cert, err := tls.LoadX509KeyPair(uri.CertFile, uri.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("load client certificate: %w", err)
			}
			c.Certificates = []tls.Certificate{cert}
		}
	}
	if c.ServerName == "" {
		c.ServerName = uri.Host
	}
	return c, nil
}

// deadlineConn is what amqp.Open reads and writes: the network connection
// (TLS or not) without its SetReadDeadline method. Given a connection with
// one, amqp091-go (v1.16.0, Connection.reader) hands it to its heartbeater
// goroutine after every frame it reads, to move the read deadline: a
// goroutine wake-up and a timer change per frame, several per call, which
// at one caller cost about a tenth of the calls/s (bench, alternating
// builds). deadlineConn moves the deadline from the reading goroutine
// itself, at most every quarter of the timeout (1.5 heartbeat intervals,
// as amqp091-go's), so a silent link is noticed after 1.5 to 1.9
// intervals, where amqp091-go takes 1.5.
type deadlineConn struct {
	conn    net.Conn
	timeout atomic.Int64 // nanoseconds; 0 until the handshake is done
	moved   time.Time    // when the deadline was last moved; read by Read only
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if t := time.Duration(c.timeout.Load()); t > 0 {
		// Moved at most every t/4, the deadline is t + t/4 away, so a
		// Read never has less than t.
		if now := time.Now(); now.Sub(c.moved) > t/4 {
			_ = c.conn.SetReadDeadline(now.Add(t + t/4))
			c.moved = now
		}
	}
	return c.conn.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) { return c.conn.Write(p) }

func (c *deadlineConn) Close() error { return c.conn.Close() }

// SetDeadline is how amqp.Open clears the handshake's deadline.
func (c *deadlineConn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// LocalAddr, RemoteAddr and ConnectionState serve amqp.Connection's methods
// of the same names.
func (c *deadlineConn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

func (c *deadlineConn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

func (c *deadlineConn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.conn.(*tls.Conn); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// SplitURLs returns the broker URLs in raw: one URL, or several separated
// by commas (the nodes of a cluster), each amqp:// or amqps:// with its own
// credentials. Spaces around the commas are ignored. A password that holds
// a comma must be percent-encoded (%2C), as URLs require anyway.
func SplitURLs(raw string) ([]string, error) {
	var urls []string
	for _, u := range strings.Split(raw, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if _, err := ParseURI(u); err != nil {
			return nil, fmt.Errorf("amqprpc: broker URL %s: %w", Redact(u), err)
		}
		urls = append(urls, u)
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("amqprpc: no broker URL in %q", Redact(raw))
	}
	return urls, nil
}

// dialAny dials urls in a random order, so that many clients spread over a
// cluster's nodes, and returns the first connection made with its URL. If
// none can be made, the error joins each URL's.
func dialAny(ctx context.Context, urls []string, cfg Config) (*amqp.Connection, *corkConn, string, error) {
	var errs []error
	for _, i := range rand.Perm(len(urls)) {
		conn, cc, err := dial(ctx, urls[i], cfg)
		if err == nil {
			return conn, cc, urls[i], nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, "", errors.Join(errs...)
}

// errUnparsableURL replaces net/url's errors, which quote the URL,
// password included.
var errUnparsableURL = errors.New("not a URL (reserved characters in the user name or password must be percent-encoded, RFC 3986 section 3.2.1)")

// ParseURI is amqp.ParseURI with errors that never contain the URL: those
// of net/url quote it whole, password included (amqp091-go v1.16.0 wraps
// them as they are), and even their detail ("invalid port") can hold part
// of a password with a reserved character in it.
func ParseURI(rawURL string) (amqp.URI, error) {
	uri, err := amqp.ParseURI(rawURL)
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return amqp.URI{}, errUnparsableURL
	}
	return uri, err
}

// Redact returns rawURL with its password replaced by "xxxxx", for logs and
// errors. A URL that does not parse is replaced entirely.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable url>"
	}
	return u.Redacted()
}
