package sinks

import (
	"hash/fnv"
	"sync"
)

// lanes is the ordering stage: events with the same event.OrderKey (one
// build, one VM) go to the same lane, and a lane hands one event at a time
// to process, which returns only when the event is acked, dead-lettered or
// handed back. Different resources proceed in parallel, one per lane.
type lanes struct {
	ls []*lane
	wg sync.WaitGroup
}

// startLanes starts n lanes. Each runs process on its items until stop is
// closed; then the items still queued go to handBack, in order.
func startLanes(n int, stop <-chan struct{}, process, handBack func(*item)) *lanes {
	ls := &lanes{ls: make([]*lane, n)}
	for i := range ls.ls {
		l := &lane{wake: make(chan struct{}, 1)}
		ls.ls[i] = l
		ls.wg.Add(1)
		go func() {
			defer ls.wg.Done()
			for {
				it, ok := l.pop(stop)
				if !ok {
					break
				}
				process(it)
			}
			for _, it := range l.close() {
				handBack(it)
			}
		}()
	}
	return ls
}

// push queues it on its resource's lane; false when that lane has closed
// (the runner is stopping): the caller hands it back.
func (ls *lanes) push(it *item) bool { return ls.ls[ls.of(it)].push(it) }

// wait returns when every lane has ended.
func (ls *lanes) wait() { ls.wg.Wait() }

func (ls *lanes) of(it *item) int {
	if it.decodeErr != nil || len(ls.ls) == 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(it.ev.OrderKey()))
	return int(h.Sum32() % uint32(len(ls.ls)))
}

// lane is one FIFO queue of held items.
type lane struct {
	mu     sync.Mutex
	q      []*item
	closed bool
	wake   chan struct{}
}

func (l *lane) push(it *item) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.q = append(l.q, it)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return true
}

func (l *lane) pop(stop <-chan struct{}) (*item, bool) {
	for {
		select {
		case <-stop:
			return nil, false
		default:
		}
		l.mu.Lock()
		if len(l.q) > 0 {
			it := l.q[0]
			l.q[0] = nil
			l.q = l.q[1:]
			l.mu.Unlock()
			return it, true
		}
		l.mu.Unlock()
		select {
		case <-l.wake:
		case <-stop:
			return nil, false
		}
	}
}

func (l *lane) close() []*item {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	rest := l.q
	l.q = nil
	return rest
}
