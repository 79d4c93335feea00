package transport

import (
	"net"
	"sync"
	"time"
)

// corkConn is the network connection under an amqp091-go connection. It
// lets the publisher cork it: amqp091-go flushes (one write system call)
// after every message and every ack, so while a batch of messages or acks
// is being sent, corkConn gathers the writes and uncork sends them in one.
// Corking never spans a wait: the publisher uncorks as soon as its batch is
// written. It also releases the dial context's hook once the handshake is
// done (amqp091-go then clears the deadline) or the connection closes, so
// that ending the context later does not cut a live connection.
type corkConn struct {
	net.Conn
	stop     func() bool
	uncorkFn func() // uncork as a func value, made once: Cork returns it for every batch

	mu sync.Mutex
	// protects corked, buf and the writes to Conn
	corked int
	buf    []byte
}

func newCorkConn(conn net.Conn, stop func() bool) *corkConn {
	c := &corkConn{Conn: conn, stop: stop}
	c.uncorkFn = c.uncork
	return c
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked == 0 {
		return c.Conn.Write(p)
	}
	if len(p) < bigWrite {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	// A large write gains nothing from gathering: send what was gathered,
	// then it, without copying it.
	if len(c.buf) > 0 {
		if _, err := c.Conn.Write(c.buf); err != nil {
			return 0, err
		}
		c.buf = c.buf[:0]
	}
	return c.Conn.Write(p)
}

// bigWrite is the size from which a corked write goes out at once.
const bigWrite = 16 << 10

func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked++
	c.mu.Unlock()
}

// maxCorkBuffer is the largest buffer kept between batches.
const maxCorkBuffer = 1 << 20

func (c *corkConn) uncork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked--; c.corked > 0 || len(c.buf) == 0 {
		return
	}
	if _, err := c.Conn.Write(c.buf); err != nil {
		// amqp091-go believes these bytes were sent: make its reader fail
		// so that the connection is seen as lost and redialed.
		_ = c.Conn.Close()
	}
	if cap(c.buf) > maxCorkBuffer {
		c.buf = nil
	} else {
		c.buf = c.buf[:0]
	}
}

func (c *corkConn) SetDeadline(t time.Time) error {
	if t.IsZero() {
		c.stop()
	}
	return c.Conn.SetDeadline(t)
}

func (c *corkConn) Close() error {
	c.stop()
	return c.Conn.Close()
}
