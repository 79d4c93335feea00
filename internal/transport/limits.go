package transport

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrTooLong means a name, property or header does not fit the AMQP field
// that carries it. Nothing was sent: amqp091-go closes the whole
// connection when it cannot encode a frame, so values are checked first.
var ErrTooLong = errors.New("amqprpc: value exceeds an AMQP limit")

// Limits of AMQP 0-9-1 and RabbitMQ that a message or a declaration must
// respect.
const (
	// MaxShortString is the length in bytes of the longest AMQP short
	// string (AMQP 0-9-1 §4.2.5.3): exchange, queue and routing key names,
	// and the properties type, reply_to, correlation_id, message_id,
	// content_type and expiration, and header keys.
	MaxShortString = 255
	// MaxExpiry is RabbitMQ's largest per-message TTL, x-expires and
	// x-message-ttl, in milliseconds (2^32-1, about 49.7 days;
	// rabbit_misc:check_expiry): a larger expiration makes the broker close
	// the channel.
	MaxExpiry = 1<<32 - 1
	// MaxHeaderFrame bounds the encoded properties of one message, headers
	// included. They travel in one content header frame, which must fit
	// the connection's frame_max: 4096 bytes at the least the broker may
	// negotiate (AMQP 0-9-1 §4.2.3, frame-min-size), 131072 by default.
	// The bound leaves room for a frame_max of 64 KiB.
	MaxHeaderFrame = 60 << 10
)

// headerFrameSlack is what a content header frame holds beyond the
// properties Check counts, at most, in bytes: the frame's own 8 (AMQP
// 0-9-1 §2.3.5); the class, weight, body size and property flags (14,
// §4.2.6.1); the delivery mode, priority and timestamp (10); and the
// digits of an expiration set when the message is sent (10: MaxExpiry has
// ten; Check counts its length byte). A message with every property is
// exactly Check's size plus this.
const headerFrameSlack = 8 + 14 + 10 + 10

// fitsFrame reports whether properties of size bytes (as Check counts
// them) fit one frame of a connection whose frame_max is frameMax bytes
// (0: no limit). A larger header frame makes the broker close the
// connection, with every channel on it.
func fitsFrame(size, frameMax int) bool {
	return frameMax <= 0 || size+headerFrameSlack <= frameMax
}

// CheckName returns an error wrapping ErrTooLong when name, what (a queue,
// a routing key...), does not fit an AMQP short string.
func CheckName(what, name string) error {
	if len(name) > MaxShortString {
		return fmt.Errorf("%w: %s of %d bytes (AMQP short strings hold at most %d): %.40q…",
			ErrTooLong, what, len(name), MaxShortString, name)
	}
	return nil
}

// CheckExpiry returns an error wrapping ErrTooLong when d, a queue's or a
// message's time to live, is over RabbitMQ's MaxExpiry.
func CheckExpiry(what string, d time.Duration) error {
	if d.Milliseconds() > MaxExpiry {
		return fmt.Errorf("%w: %s of %v (RabbitMQ allows at most %d ms)", ErrTooLong, what, d, MaxExpiry)
	}
	return nil
}

// Check returns why m cannot be published as it is, or nil: every short
// string within MaxShortString, headers of types AMQP tables carry, and
// all properties within MaxHeaderFrame. Errors about length wrap
// ErrTooLong. It also returns the size of m's properties as it counts
// them: every short string property with its length byte, and the headers
// table (the exchange and routing key travel in the method frame: they
// are checked, not counted).
func Check(m *Message) (int, error) {
	if err := CheckName("exchange", m.Exchange); err != nil {
		return 0, err
	}
	if err := CheckName("routing key", m.Key); err != nil {
		return 0, err
	}
	names := [...]struct{ what, s string }{
		{"type (the method name)", m.Type}, {"reply_to", m.ReplyTo},
		{"correlation_id", m.CorrelationId}, {"message_id", m.MessageId},
		{"content_type", m.ContentType}, {"content_encoding", m.ContentEncoding},
		{"expiration", m.Expiration}, {"user_id", m.UserId}, {"app_id", m.AppId},
	}
	size := 0
	for _, n := range names {
		if err := CheckName(n.what, n.s); err != nil {
			return 0, err
		}
		size += 1 + len(n.s)
	}
	if m.Expiration != "" {
		if ms, err := strconv.ParseUint(m.Expiration, 10, 64); err != nil || ms > MaxExpiry {
			return 0, fmt.Errorf("%w: expiration %q is not a number of milliseconds up to %d", ErrTooLong, m.Expiration, MaxExpiry)
		}
	}
	if m.Headers != nil {
		if err := m.Headers.Validate(); err != nil {
			return 0, fmt.Errorf("amqprpc: headers: %w", err)
		}
		n, err := tableSize(m.Headers, 0)
		if err != nil {
			return 0, err
		}
		size += n
	}
	if size > MaxHeaderFrame {
		return 0, fmt.Errorf("%w: properties and headers of %d bytes (at most %d fit one frame)", ErrTooLong, size, MaxHeaderFrame)
	}
	return size, nil
}

// maxTableDepth bounds the nesting of header tables Check walks: as deep
// as amqp091-go reads them, so that headers received can be sent again.
const maxTableDepth = 32

// tableSize is an upper bound of the encoded size of t (AMQP 0-9-1 §4.2.5.5,
// as amqp091-go writes it), and an error for a key that is too long.
func tableSize(t amqp.Table, depth int) (int, error) {
	if depth > maxTableDepth {
		return 0, fmt.Errorf("%w: header tables nested deeper than %d", ErrTooLong, maxTableDepth)
	}
	size := 4
	for k, v := range t {
		if err := CheckName("header key", k); err != nil {
			return 0, err
		}
		n, err := fieldSize(v, depth)
		if err != nil {
			return 0, err
		}
		size += 1 + len(k) + n
	}
	return size, nil
}

func fieldSize(v any, depth int) (int, error) {
	switch v := v.(type) {
	case string:
		return 5 + len(v), nil
	case []byte:
		return 5 + len(v), nil
	case amqp.Table:
		n, err := tableSize(v, depth+1)
		return 1 + n, err
	case []any:
		size := 5
		for _, e := range v {
			n, err := fieldSize(e, depth+1)
			if err != nil {
				return 0, err
			}
			size += n
		}
		return size, nil
	}
	return 9, nil // a number, bool, time, decimal or void: at most 1+8 bytes
}
