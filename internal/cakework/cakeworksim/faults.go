package cakeworksim

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

// ErrorShape is how an error body is spelled. The old server mixed them.
type ErrorShape string

const (
	ShapeError   ErrorShape = "error"   // {"error": "..."}
	ShapeMessage ErrorShape = "message" // {"message": "..."}
	ShapeString  ErrorShape = "string"  // "..."
	ShapeEmpty   ErrorShape = "empty"   // no body
)

// DefaultErrorShape is the shape a route's errors take unless Faults says
// otherwise: VM and image calls use {"error"}, build and log calls
// {"message"}, stop and cached-VM calls a bare string. A 401 is always empty.
func DefaultErrorShape(route string) ErrorShape {
	switch route {
	case RouteBuildImageFromFiles, RouteBuildImageFromGithub, RouteGetBuild,
		RouteGetBuildLogs, RouteGetVMLogs, RouteGetCachedVMLogs, RouteGetFunctionBuildLogs:
		return ShapeMessage
	case RouteStopVM, RouteStartCachedVM, RouteStopCachedVM, RouteDestroyCachedVM:
		return ShapeString
	}
	return ShapeError
}

func writeError(w http.ResponseWriter, status int, shape ErrorShape, msg string) {
	var body []byte
	switch shape {
	case ShapeMessage:
		body, _ = json.Marshal(map[string]string{"message": msg})
	case ShapeString:
		body, _ = json.Marshal(msg)
	case ShapeEmpty:
	default:
		body, _ = json.Marshal(map[string]string{"error": msg})
	}
	if len(body) > 0 {
		w.Header().Set("Content-Type", "application/json")
		body = append(body, '\n')
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Faults are injected failures. A zero Faults injects nothing.
type Faults struct {
	// Routes limits the faults to these route names; empty means all.
	Routes []string
	// After lets this many matching requests through untouched before any
	// fault applies (e.g. After 2, FailNext 1 fails the third page).
	After int
	// FailNext answers the next N matching requests with ErrorStatus.
	FailNext int
	// ErrorRate answers this share of matching requests with ErrorStatus.
	ErrorRate float64
	// ErrorStatus is the status of injected errors; default 500.
	ErrorStatus int
	// ErrorShape overrides the route's error body shape for every error
	// the sim answers (injected or not), except 401s.
	ErrorShape ErrorShape
	// Latency delays every matching answer, on the sim's clock.
	Latency time.Duration
	// RateLimitNext answers the next N matching requests 429 with
	// Retry-After.
	RateLimitNext int
	// RetryAfter is sent with those 429s, in whole seconds rounded up;
	// default 1s. Negative sends no Retry-After header.
	RetryAfter time.Duration
	// TruncateNext / TruncateRate cut 2xx bodies in half (valid HTTP,
	// broken JSON).
	TruncateNext int
	TruncateRate float64
	// GarbageNext / GarbageRate replace 2xx bodies with HTML.
	GarbageNext int
	GarbageRate float64
}

// SetFaults replaces the injected faults.
func (s *Sim) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// ClearFaults stops injecting faults.
func (s *Sim) ClearFaults() { s.SetFaults(Faults{}) }

// decision is what the faults do to one request.
type decision struct {
	latency   time.Duration
	rateLimit bool
	retryHdr  string
	failWith  int
	shape     ErrorShape
	truncate  bool
	garbage   bool
}

// decide consumes counters and rolls dice for one request. Call with s.mu held.
func (s *Sim) decide(route string) decision {
	f := &s.faults
	d := decision{shape: f.ErrorShape}
	if d.shape == "" {
		d.shape = DefaultErrorShape(route)
	}
	if len(f.Routes) > 0 && !slices.Contains(f.Routes, route) {
		return decision{shape: DefaultErrorShape(route)}
	}
	if f.After > 0 {
		f.After--
		return decision{shape: d.shape}
	}
	d.latency = f.Latency
	switch {
	case f.RateLimitNext > 0:
		f.RateLimitNext--
		d.rateLimit = true
		ra := f.RetryAfter
		if ra == 0 {
			ra = time.Second
		}
		if ra > 0 {
			d.retryHdr = strconv.FormatInt(int64(math.Ceil(ra.Seconds())), 10)
		}
		return d
	case f.FailNext > 0:
		f.FailNext--
		d.failWith = errorStatus(f.ErrorStatus)
	case f.ErrorRate > 0 && s.rnd.Float64() < f.ErrorRate:
		d.failWith = errorStatus(f.ErrorStatus)
	}
	if d.failWith != 0 {
		return d
	}
	switch {
	case f.TruncateNext > 0:
		f.TruncateNext--
		d.truncate = true
	case f.GarbageNext > 0:
		f.GarbageNext--
		d.garbage = true
	case f.TruncateRate > 0 && s.rnd.Float64() < f.TruncateRate:
		d.truncate = true
	case f.GarbageRate > 0 && s.rnd.Float64() < f.GarbageRate:
		d.garbage = true
	}
	return d
}

// Calls returns how many requests each route has received (including the
// ones answered with errors or faults).
func (s *Sim) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		out[k] = v
	}
	return out
}

// CallCount returns how many requests route has received.
func (s *Sim) CallCount(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[route]
}

// StopsDone is how many stopVM calls stopped a VM: CallCount(RouteStopVM)
// less those answered 404 or 409 (already stopped), and less faults.
func (s *Sim) StopsDone() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopsDone
}

// TotalCalls returns the number of requests received on all routes.
func (s *Sim) TotalCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.calls {
		n += v
	}
	return n
}

// ResetCalls zeroes the call counters.
func (s *Sim) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = map[string]int{}
}

func errorStatus(status int) int {
	if status < 400 || status > 599 {
		return http.StatusInternalServerError
	}
	return status
}

type shapeKey struct{}

func contextWithShape(ctx context.Context, shape ErrorShape) context.Context {
	return context.WithValue(ctx, shapeKey{}, shape)
}

// fail answers an error in the shape chosen for this request.
func fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	shape, _ := r.Context().Value(shapeKey{}).(ErrorShape)
	writeError(w, status, shape, msg)
}

// bufWriter holds a handler's answer so faults can mangle it.
type bufWriter struct {
	h      http.Header
	status int
	buf    bytes.Buffer
}

func (b *bufWriter) Header() http.Header { return b.h }
func (b *bufWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}
func (b *bufWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.buf.Write(p)
}

const garbageBody = "<!doctype html><html><head><title>502</title></head><body>upstream hiccup"

// wrap counts the call, checks the key, applies faults, brings the state
// machine up to the clock, and runs h.
func (s *Sim) wrap(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls[route]++
		d := s.decide(route)
		s.mu.Unlock()

		if d.latency > 0 {
			if err := clock.Sleep(r.Context(), s.clk, d.latency); err != nil {
				return
			}
		}
		if s.opts.APIKey != "" && r.Header.Get("X-Api-Key") != s.opts.APIKey {
			writeError(w, http.StatusUnauthorized, ShapeEmpty, "")
			return
		}
		if d.rateLimit {
			if d.retryHdr != "" {
				w.Header().Set("Retry-After", d.retryHdr)
			}
			writeError(w, http.StatusTooManyRequests, d.shape, "rate limit exceeded")
			return
		}
		if d.failWith != 0 {
			writeError(w, d.failWith, d.shape, "injected failure: "+http.StatusText(d.failWith))
			return
		}
		s.mu.Lock()
		s.advance(s.clk.Now())
		s.mu.Unlock()

		bw := &bufWriter{h: http.Header{}}
		h(bw, r.WithContext(contextWithShape(r.Context(), d.shape)))
		body := bw.buf.Bytes()
		status := bw.status
		if status == 0 {
			status = http.StatusOK
		}
		if status >= 200 && status < 300 {
			switch {
			case d.truncate && len(body) > 1:
				body = body[:len(body)/2]
			case d.garbage:
				body = []byte(garbageBody)
				bw.h.Set("Content-Type", "text/html")
			}
		}
		for k, v := range bw.h {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		_, _ = w.Write(body)
	})
}
