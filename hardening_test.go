package amqprpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/rpc"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/codec"
)

// Echo answers at once, counting its runs.
type Echo struct{ ran atomic.Int32 }

func (e *Echo) Say(arg string, reply *string) error {
	e.ran.Add(1)
	*reply = arg
	return nil
}

// Fail returns its argument as its error text.
func (e *Echo) Fail(arg string, reply *string) error {
	e.ran.Add(1)
	return errors.New(arg)
}

// loggedTo returns an option that logs to a buffer, and the buffer.
func loggedTo() (Option, *brokertest.Buffer) {
	buf := new(brokertest.Buffer)
	return WithLogger(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))), buf
}

// A call whose method name or routing key is over AMQP's 255 bytes, or
// whose args are over the body limit, fails at once with an error that
// names the limit; nothing is sent, so the publishing connection that every
// other call shares stays up, and those calls go on succeeding.
func TestOverLimitCallsFailAlone(t *testing.T) {
	ns := brokertest.Namespace(t)
	echo := new(Echo)
	startServer(t, ns, newRPCServer(t, echo))
	logOpt, log := loggedTo()
	c := dial(t, ns, logOpt, WithMaxBodySize(64<<10))
	long := strings.Repeat("W", 300)
	c.Tune("Echo.Tuned", func(any) string { return long })

	stop := runLoad(1, func(_, j int) error {
		var r string
		return c.Call("Echo.Say", fmt.Sprint("good ", j), &r)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name, method string
		args         any
		want         error
	}{
		{"method name of 308 bytes", "Counter." + long, 1, ErrTooLong},
		{"method name of 256 bytes", "Echo." + strings.Repeat("S", 251), "x", ErrTooLong},
		{"To key of 300 bytes", "Echo.Say", To(long, "x"), ErrTooLong},
		{"Tune key of 300 bytes", "Echo.Tuned", "x", ErrTooLong},
		{"args over the body limit", "Echo.Say", strings.Repeat("x", 65<<10), ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			var r string
			err := c.CallContext(ctx, tc.method, tc.args, &r)
			require.ErrorIs(t, err, tc.want)
			assert.NotErrorAs(t, err, new(rpc.ServerError))
			assert.Less(t, time.Since(start), time.Second, "fails at once")
			call := <-c.Go(tc.method, tc.args, &r, nil).Done
			assert.Error(t, call.Error, "through Go too")
		})
	}
	// A key of exactly 255 bytes is fine: it just finds no queue.
	var r string
	require.ErrorIs(t, c.CallContext(ctx, "Echo.Say", To(strings.Repeat("k", 255), "x"), &r), ErrNoRoute)
	// A deadline beyond RabbitMQ's largest expiration (2^32-1 ms) is sent
	// capped, not refused by the broker.
	far, cancelFar := context.WithDeadline(ctx, time.Now().Add(60*24*time.Hour))
	defer cancelFar()
	require.NoError(t, c.CallContext(far, "Echo.Say", "far", &r))
	assert.Equal(t, "far", r)

	res := stop()
	require.Zero(t, res.failed, "the other calls; first failure: %v", res.first)
	assert.Positive(t, res.calls)
	assert.NotContains(t, log.String(), "connection lost", "the shared connection stayed up")
}

// Names a client or server declares are checked against AMQP's limits
// before anything is sent, with an error naming the limit.
func TestOverLimitNamesAreRefused(t *testing.T) {
	ns := brokertest.Namespace(t)
	logOpt, log := loggedTo()
	c := dial(t, ns, logOpt)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	long := strings.Repeat("q", 250)

	require.ErrorIs(t, c.CreateRequestQueue(ctx, long), ErrTooLong, "rpc_<ns>_queue_ + 250 bytes")
	require.ErrorIs(t, c.CreateRequestQueue(ctx, "ok", WithQueueRoutingKey(strings.Repeat("k", 256))), ErrTooLong)
	require.ErrorIs(t, c.CreateRequestQueue(ctx, "ok", WithQueueExpiry(50*24*time.Hour)), ErrTooLong)
	require.ErrorIs(t, c.DeleteRequestQueue(ctx, long), ErrTooLong)
	s := startServer(t, ns, newRPCServer(t, new(Echo)))
	_, err := s.ReceiveFromQueue(ctx, long, 1)
	require.ErrorIs(t, err, ErrTooLong)

	_, err = Dial(brokertest.URL(), strings.Repeat("n", 150), WithClientID(strings.Repeat("c", 100)))
	require.ErrorIs(t, err, ErrTooLong, "reply queue rpc_<150>_<100>_response")
	_, err = Dial(brokertest.URL(), ns, WithReplyQueueExpiry(50*24*time.Hour))
	require.ErrorIs(t, err, ErrTooLong)

	var r string
	require.NoError(t, c.Call("Echo.Say", "still fine", &r))
	assert.NotContains(t, log.String(), "connection lost")
}

// A handler's error text far larger than a frame is cut to fit a header,
// instead of making the server's connection fail over and over.
func TestLongErrorTextIsTruncated(t *testing.T) {
	ns := brokertest.Namespace(t)
	echo := new(Echo)
	logOpt, log := loggedTo()
	startServer(t, ns, newRPCServer(t, echo), logOpt)
	c := dial(t, ns, WithMaxBodySize(1<<20))
	var r string
	err := c.Call("Echo.Fail", strings.Repeat("é", 100<<10), &r) // 200 KiB of text
	var se rpc.ServerError
	require.ErrorAs(t, err, &se)
	assert.LessOrEqual(t, len(se), maxErrorText)
	assert.True(t, strings.HasSuffix(string(se), "(truncated)"))
	assert.True(t, strings.HasPrefix(string(se), "éé"))
	require.NoError(t, c.Call("Echo.Say", "next", &r))
	assert.Equal(t, int32(2), echo.ran.Load())
	assert.NotContains(t, log.String(), "connection lost")
}

// A reply the broker refuses (its reply queue is full, with overflow
// reject-publish) rejects its request instead of requeueing it: the
// handler runs once per call, not over and over, and the server logs it.
func TestReplyTheBrokerRefuses(t *testing.T) {
	ns := brokertest.Namespace(t)
	policy := "amqprpc-test-" + ns
	brokertest.Rabbitmqctl(t, "set_policy", policy, "^rpc_"+ns+"_.*_response$",
		`{"max-length":1,"overflow":"reject-publish"}`, "--apply-to", "queues")
	t.Cleanup(func() { brokertest.Rabbitmqctl(t, "clear_policy", policy) })

	c, err := Dial(brokertest.URL(), ns)
	require.NoError(t, err)
	for i := range 4 {
		c.Go("Echo.Say", fmt.Sprint("call ", i), new(string), nil)
	}
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, "rpc_"+ns+"_request") == 4 }, 5*time.Second, 10*time.Millisecond)
	require.NoError(t, c.Close()) // its reply queue stays, with nobody to drain it

	echo := new(Echo)
	logOpt, log := loggedTo()
	startServer(t, ns, newRPCServer(t, echo), logOpt)
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 10*time.Second, 20*time.Millisecond,
		"every request settled")
	time.Sleep(500 * time.Millisecond) // a loop would go on meanwhile
	assert.Equal(t, int32(4), echo.ran.Load(), "each handler ran once")
	assert.Equal(t, 3, strings.Count(log.String(), "the request is rejected"), "one reply fits the queue")
}

// Deleter deletes a queue, then answers: the reply is published while
// that queue is gone.
type Deleter struct {
	ran atomic.Int32
	ch  *amqp.Channel
}

func (d *Deleter) Delete(queue string, reply *string) error {
	d.ran.Add(1)
	if _, err := d.ch.QueueDelete(queue, false, false, false); err != nil {
		return err
	}
	*reply = "deleted " + queue
	return nil
}

// A client whose reply queue is deleted (here by the handler, so that the
// reply finds no queue) declares it again and publishes its pending calls
// again; the server answers the copy from its reply cache, without running
// the handler twice, long before the deadline.
func TestReplyQueueDeleted(t *testing.T) {
	ns := brokertest.Namespace(t)
	d := &Deleter{ch: brokertest.Channel(t)}
	startServer(t, ns, newRPCServer(t, d))
	logOpt, log := loggedTo()
	c := dial(t, ns, logOpt)
	queue := "rpc_" + ns + "_" + c.ID() + "_response"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	var r string
	require.NoError(t, c.CallContext(ctx, "Deleter.Delete", queue, &r))
	assert.Equal(t, "deleted "+queue, r)
	assert.Less(t, time.Since(start), 10*time.Second, "well before the deadline")
	assert.Equal(t, int32(1), d.ran.Load(), "the handler ran once")
	assert.Contains(t, log.String(), "reply queue was lost")
	require.NoError(t, c.CallContext(ctx, "Deleter.Delete", "no-such-queue-"+ns, &r), "the client goes on")
}

// A foreign client that reuses a message_id (a business key) for two
// different calls with the same reply_to gets both run and both answered:
// two different calls are never taken for one.
func TestForeignMessageIDReuse(t *testing.T) {
	ns := brokertest.Namespace(t)
	echo := new(Echo)
	startServer(t, ns, newRPCServer(t, echo))
	p := newRawPeer(t, ns)
	for i, m := range []amqp.Publishing{
		{CorrelationId: "c1", Body: []byte(`"first"`)},
		{CorrelationId: "c2", Body: []byte(`"second"`)},
		{CorrelationId: "c2", Body: []byte(`"third"`)}, // same ids, other args
	} {
		m.Type, m.ReplyTo, m.MessageId, m.ContentType = "Echo.Say", "rawpeer", "order-1", "application/json"
		p.send(m)
		d := p.reply()
		assert.Equal(t, m.CorrelationId, d.CorrelationId, "call %d", i)
		assert.Equal(t, string(m.Body), string(d.Body), "call %d", i)
		assert.Nil(t, d.Headers[headerError], "call %d", i)
	}
	assert.Equal(t, int32(3), echo.ran.Load())
}

// foreignServer answers the requests of namespace ns by hand, with
// whatever reply answer makes of each.
func foreignServer(t *testing.T, ns string, answer func(d amqp.Delivery) amqp.Publishing) {
	ch := brokertest.Channel(t)
	requests, err := ch.Consume("rpc_"+ns+"_request", "", true, false, false, false, nil)
	require.NoError(t, err)
	go func() {
		for d := range requests {
			m := answer(d)
			m.CorrelationId = d.CorrelationId
			_ = ch.Publish("rpc_"+ns+"_response", d.ReplyTo, false, false, m)
		}
	}()
}

// The error header as foreign servers send it: bytes (pika's Python
// bytes) carry the text; empty or null (void) mean success, as absence
// does. A handler's text that reads like one of the client's own failures
// stays the server's word.
func TestErrorHeaderForms(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns, WithCodec(codec.JSON))
	foreignServer(t, ns, func(d amqp.Delivery) amqp.Publishing {
		var arg string
		_ = codec.JSON.Unmarshal(d.Body, &arg)
		m := amqp.Publishing{ContentType: "application/json; charset=utf-8", Body: []byte(`"ok"`)}
		switch arg {
		case "bytes":
			m.Headers, m.Body = amqp.Table{"error": []byte("boom as bytes")}, nil
		case "empty":
			m.Headers = amqp.Table{"error": ""}
		case "null":
			m.Headers = amqp.Table{"error": nil}
		case "empty bytes":
			m.Headers = amqp.Table{"error": []byte{}}
		case "timeout text":
			m.Headers, m.Body = amqp.Table{"error": errTimedOut.Error()}, nil
		case "no route text":
			m.Headers, m.Body = amqp.Table{"error": `amqprpc: no queue bound for routing key "x"`}, nil
		}
		return m
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A Go call tells them apart too.
	call := <-c.Go("Foreign.Say", "timeout text", new(string), nil).Done
	assert.Equal(t, rpc.ServerError(errTimedOut.Error()), call.Error)
	for _, tc := range []struct{ arg, wantErr string }{
		{"bytes", "boom as bytes"},
		{"empty", ""},
		{"null", ""},
		{"empty bytes", ""},
		{"timeout text", errTimedOut.Error()},
		{"no route text", `amqprpc: no queue bound for routing key "x"`},
	} {
		var r string
		err := c.CallContext(ctx, "Foreign.Say", tc.arg, &r)
		if tc.wantErr == "" {
			require.NoError(t, err, tc.arg)
			assert.Equal(t, "ok", r, tc.arg)
			continue
		}
		assert.Equal(t, rpc.ServerError(tc.wantErr), err, tc.arg)
		assert.NotErrorIs(t, err, context.DeadlineExceeded, tc.arg)
		assert.NotErrorIs(t, err, ErrNoRoute, tc.arg)
	}
}

// Content types are MIME media types: parameters and case do not matter,
// a charset other than UTF-8 is refused, on requests and on replies.
func TestContentTypeParameters(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Echo)))
	p := newRawPeer(t, ns)
	for _, tc := range []struct {
		ct, body, wantErr string
	}{
		{"application/json; charset=utf-8", `"a"`, ""},
		{"application/json;charset=UTF-8", `"b"`, ""},
		{"Application/JSON", `"c"`, ""},
		{"application/x-msgpack", "\xa1d", ""},
		{"application/json; charset=latin1", `"e"`, "unknown content type"},
		{"application/json; charset", `"f"`, "unknown content type"},
	} {
		p.send(amqp.Publishing{Type: "Echo.Say", ReplyTo: "rawpeer", CorrelationId: tc.ct, ContentType: tc.ct, Body: []byte(tc.body)})
		d := p.reply()
		assert.Equal(t, tc.ct, d.CorrelationId)
		if tc.wantErr != "" {
			assert.Contains(t, d.Headers[headerError], tc.wantErr, tc.ct)
			continue
		}
		assert.Nil(t, d.Headers[headerError], tc.ct)
		assert.Equal(t, tc.body, string(d.Body), tc.ct)
	}
}

// Arith takes and returns structs, as most services do.
type Arith struct{ ran atomic.Int32 }

type AddArgs struct{ A, B int }

type Total struct{ C int }

func (a *Arith) Add(args AddArgs, sum *int) error {
	a.ran.Add(1)
	*sum = args.A + args.B
	return nil
}

func (a *Arith) Sum(args AddArgs, t *Total) error {
	a.ran.Add(1)
	t.C = args.A + args.B
	return nil
}

// A body of the wrong shape for the method's args is refused with an
// error reply before the handler runs, whatever sent it: a struct of
// another type, the original Python library's request shape, an array
// where a struct is expected, null. Unknown extra fields are still fine.
func TestWrongShapedArgsAreRefused(t *testing.T) {
	ns := brokertest.Namespace(t)
	arith := new(Arith)
	startServer(t, ns, newRPCServer(t, arith))
	for _, cd := range []codec.Codec{codec.MsgPack, codec.JSON} {
		t.Run(cd.ContentType(), func(t *testing.T) {
			c := dial(t, ns, WithCodec(cd))
			var sum int
			err := c.Call("Arith.Add", &Total{C: 1}, &sum)
			var se rpc.ServerError
			require.ErrorAs(t, err, &se)
			assert.Contains(t, string(se), "shares no field")
			require.ErrorAs(t, c.Call("Arith.Add", []int{7, 8}, &sum), &se)
			require.ErrorAs(t, c.Call("Arith.Add", nil, &sum), &se)
			type Newer struct{ A, B, Extra int }
			require.NoError(t, c.Call("Arith.Add", Newer{A: 1, B: 2, Extra: 3}, &sum), "an unknown field is fine")
			assert.Equal(t, 3, sum)
		})
	}
	p := newRawPeer(t, ns)
	for _, tc := range []struct{ name, ct, body string }{
		{"amphora request", "application/json", `{"func":"Arith.Add","args":[1,2],"kwargs":{}}`},
		{"msgpack array", "application/msgpack", "\x92\x07\x08"},
		{"JSON array", "application/json", `[7,8]`},
		{"JSON null", "application/json", `null`},
		{"msgpack nil", "application/msgpack", "\xc0"},
	} {
		p.send(amqp.Publishing{Type: "Arith.Add", ReplyTo: "rawpeer", CorrelationId: tc.name, ContentType: tc.ct, Body: []byte(tc.body)})
		d := p.reply()
		assert.Equal(t, tc.name, d.CorrelationId)
		assert.NotEmpty(t, d.Headers[headerError], tc.name)
		assert.Empty(t, d.Body, tc.name)
	}
	assert.Equal(t, int32(2), arith.ran.Load(), "only the well-shaped calls ran")
}

// A reply of the wrong shape for the caller's reply value fails the call
// with ErrBadReply (the client's own failure, not the server's word): a
// struct where an int is expected, null without an error header (a
// foreign server's None), a struct with no field in common.
func TestWrongShapedRepliesAreRefused(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns, WithCodec(codec.JSON))
	foreignServer(t, ns, func(d amqp.Delivery) amqp.Publishing {
		var arg string
		_ = codec.JSON.Unmarshal(d.Body, &arg)
		return amqp.Publishing{ContentType: d.ContentType, Body: []byte(arg)}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	var tot Total
	var list []int
	for _, tc := range []struct {
		body  string
		reply any
		ok    bool
	}{
		{`null`, &n, false},
		{`null`, &tot, false},
		{`{"D":1}`, &tot, false},
		{`[1]`, &tot, false},
		{`{"C":1}`, &n, false},
		{`null`, &list, true}, // a nil slice is a value
		{`{"C":5,"D":1}`, &tot, true},
	} {
		err := c.CallContext(ctx, "Foreign.Echo", tc.body, tc.reply)
		if tc.ok {
			assert.NoError(t, err, tc.body)
			continue
		}
		assert.ErrorIs(t, err, ErrBadReply, tc.body)
		assert.NotErrorAs(t, err, new(rpc.ServerError), tc.body)
		call := <-c.Go("Foreign.Echo", tc.body, tc.reply, nil).Done
		assert.ErrorIs(t, call.Error, ErrBadReply, "Go: %s", tc.body)
	}
	assert.Equal(t, 5, tot.C)
}

// Big answers with a reply larger than the broker takes.
type Big struct{ ran atomic.Int32 }

func (b *Big) Reply(n int, reply *string) error {
	b.ran.Add(1)
	*reply = strings.Repeat("b", n)
	return nil
}

// A reply the broker closes the channel over (larger than its
// max_message_size) is given up, and the caller gets a short error
// saying so instead of waiting for its deadline; the handler ran once.
func TestReplyTooLargeForTheBroker(t *testing.T) {
	ns := brokertest.Namespace(t)
	size := refusedBodySize(t)
	big := new(Big)
	startServer(t, ns, newRPCServer(t, big), WithMaxBodySize(2*size))
	c := dial(t, ns, WithMaxBodySize(2*size))
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	start := time.Now()
	var r string
	err := c.CallContext(ctx, "Big.Reply", size, &r)
	var se rpc.ServerError
	require.ErrorAs(t, err, &se)
	assert.Contains(t, string(se), "the broker refused the reply (failed)")
	assert.Less(t, time.Since(start), 30*time.Second, "before the 45 s deadline")
	t.Logf("refused reply reported after %v", time.Since(start))
	require.NoError(t, c.CallContext(ctx, "Big.Reply", 10, &r))
	assert.Equal(t, int32(2), big.ran.Load(), "each ran once")
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 20*time.Millisecond)
}

// A reply that the reply queue refuses for the moment (full, with
// overflow reject-publish; or on a node that is down) is kept: when the
// client publishes the call again once its queue takes messages, the copy
// gets the reply, and the handler does not run again.
func TestRefusedReplyKeptForTheRepublishedCall(t *testing.T) {
	ns := brokertest.Namespace(t)
	echo := new(Echo)
	startServer(t, ns, newRPCServer(t, echo))
	ch := brokertest.Channel(t)
	queue := "rpc_" + ns + "_rawpeer_response"
	_, err := ch.QueueDeclare(queue, true, false, false, false, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = brokertest.Channel(t).QueueDelete(queue, false, false, false) })
	require.NoError(t, ch.QueueBind(queue, "rawpeer", "rpc_"+ns+"_response", false, nil))
	policy := "amqprpc-test-" + ns
	brokertest.Rabbitmqctl(t, "set_policy", policy, "^"+queue+"$", `{"max-length":1,"overflow":"reject-publish"}`, "--apply-to", "queues")
	t.Cleanup(func() { brokertest.Rabbitmqctl(t, "clear_policy", policy) })
	require.NoError(t, ch.Publish("", queue, false, false, amqp.Publishing{Body: []byte("filler")}))
	require.Eventually(t, func() bool { return brokertest.Messages(t, queue) == 1 }, 5*time.Second, 10*time.Millisecond)

	call := amqp.Publishing{Type: "Echo.Say", ReplyTo: "rawpeer", CorrelationId: "c1", MessageId: "c1",
		ContentType: "application/json", Body: []byte(`"kept"`)}
	require.NoError(t, ch.Publish("rpc_"+ns+"_request", "", false, false, call))
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 10*time.Second, 20*time.Millisecond,
		"the request is settled although its reply was refused")
	assert.Equal(t, int32(1), echo.ran.Load())

	_, err = ch.QueuePurge(queue, false) // room again
	require.NoError(t, err)
	require.NoError(t, ch.Publish("rpc_"+ns+"_request", "", false, false, call)) // the client's republish
	var d amqp.Delivery
	require.Eventually(t, func() bool {
		var ok bool
		d, ok, err = ch.Get(queue, true)
		return err == nil && ok
	}, 10*time.Second, 20*time.Millisecond, "a reply to the copy")
	assert.Equal(t, "c1", d.CorrelationId)
	assert.Nil(t, d.Headers[headerError], "the reply kept, not an error")
	assert.Equal(t, `"kept"`, string(d.Body))
	assert.Equal(t, int32(1), echo.ran.Load(), "the handler ran once")
}
