// Package transport holds amqprpc's AMQP plumbing: connections, publisher
// confirms and the redaction of credentials from URLs. It knows nothing of
// net/rpc.
package transport

import (
	"crypto/tls"
	"fmt"
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

// Dial opens one AMQP connection. Its errors never contain the password.
func Dial(rawURL string, cfg Config) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	if cfg.Name != "" {
		props.SetClientConnectionName(cfg.Name)
	}
	conn, err := amqp.DialConfig(rawURL, amqp.Config{
		Heartbeat:       cfg.Heartbeat,
		TLSClientConfig: cfg.TLS,
		Properties:      props,
		Locale:          "en_US",
	})
	if err != nil {
		return nil, fmt.Errorf("amqprpc: dial %s: %w", Redact(rawURL), err)
	}
	return conn, nil
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
