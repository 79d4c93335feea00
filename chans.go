package amqprpc

// signal wakes the one waiter of ch, a channel of capacity 1, without
// blocking: a wake-up already pending covers this one.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// closed reports whether ch, a channel that is only ever closed, is.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
