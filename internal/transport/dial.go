// Package transport holds amqprpc's AMQP plumbing: connections, publisher
// confirms and the redaction of credentials from URLs. It knows nothing of
// net/rpc.
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
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
	// FrameSize is the largest frame offered to the broker, in bytes; zero
	// means amqp091-go's default (128 KiB).
	FrameSize int
}

// ConsumeFrameSize is the frame size, in bytes, that consuming connections
// offer the broker: 64 KiB of payload plus a frame's 8 bytes of header and
// end. The broker cuts a delivery's body into frames of the consumer's
// size, and amqp091-go (v1.16.0, readBytes) reads a frame's payload in
// 64 KiB chunks, growing its buffer and copying it when a payload is
// longer: with its default of 128 KiB, a 64 KiB payload (a few bytes
// longer once encoded) costs a second large allocation and copy on every
// delivery. Publishing connections keep the default, so that such a
// message still goes out as one frame. Measured (bench, 64 callers,
// alternating with the default): 64 KiB payloads 2670 -> 3202 calls/s and
// 397 -> 315 us of CPU per call; 256 KiB within the noise.
const ConsumeFrameSize = 64<<10 + 8

// handshakeTimeout bounds the TCP connect and the TLS and AMQP handshakes.
const handshakeTimeout = 30 * time.Second

// dial opens one AMQP connection and returns it with the corkable network
// connection under it; ending ctx interrupts it. Its errors never contain
// the password.
func dial(ctx context.Context, rawURL string, cfg Config) (*amqp.Connection, *corkConn, error) {
	var cc *corkConn
	props := amqp.NewConnectionProperties()
	if cfg.Name != "" {
		props.SetClientConnectionName(cfg.Name)
	}
	tlsConfig := cfg.TLS
	if tlsConfig != nil {
		// amqp091-go sets ServerName to the URL's host in the config it is
		// given: a shared one would then check the next node's
		// certificate against the first node's name.
		tlsConfig = tlsConfig.Clone()
	}
	conn, err := amqp.DialConfig(rawURL, amqp.Config{
		Heartbeat:       cfg.Heartbeat,
		FrameSize:       cfg.FrameSize,
		TLSClientConfig: tlsConfig,
		Properties:      props,
		Locale:          "en_US",
		Dial: func(network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: handshakeTimeout}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// amqp091-go clears this deadline once the handshake is done;
			// until then ctx can cut the handshake short too.
			_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
			stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
			cc = newCorkConn(c, stop)
			return cc, nil
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("amqprpc: dial %s: %w", Redact(rawURL), err)
	}
	return conn, cc, nil
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
		if _, err := amqp.ParseURI(u); err != nil {
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

// Redact returns rawURL with its password replaced by "xxxxx", for logs and
// errors. A URL that does not parse is replaced entirely.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable url>"
	}
	return u.Redacted()
}
