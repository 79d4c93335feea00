// Package transport holds amqprpc's AMQP plumbing: connections, publisher
// confirms and the redaction of credentials from URLs. It knows nothing of
// net/rpc.
package transport

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
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
	conn, err := amqp.DialConfig(rawURL, amqp.Config{
		Heartbeat:       cfg.Heartbeat,
		TLSClientConfig: cfg.TLS,
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

// Redact returns rawURL with its password replaced by "xxxxx", for logs and
// errors. A URL that does not parse is replaced entirely.
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable url>"
	}
	return u.Redacted()
}
