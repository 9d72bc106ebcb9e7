package statuspage

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/clock"
)

// session is one signed-in browser.
type session struct {
	id      string
	csrf    string
	created time.Time
	expires time.Time
}

// sessions are the signed-in browsers: at most max, each for at most ttl.
type sessions struct {
	clock clock.Clock
	max   int
	ttl   time.Duration

	mu sync.Mutex
	m  map[string]*session
	// onChange reports the count (a gauge).
	onChange func(n int)
}

func newSessions(c clock.Clock, max int, ttl time.Duration, onChange func(int)) *sessions {
	return &sessions{clock: c, max: max, ttl: ttl, m: map[string]*session{}, onChange: onChange}
}

// create starts a session. Beyond max the oldest one ends: the one signing
// in has the admin token, so it is the one to keep.
func (s *sessions) create() session {
	now := s.clock.Now()
	ns := &session{id: randomToken(), csrf: randomToken(), created: now, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	for len(s.m) >= s.max {
		var oldest *session
		for _, x := range s.m {
			if oldest == nil || x.created.Before(oldest.created) {
				oldest = x
			}
		}
		delete(s.m, oldest.id)
	}
	s.m[ns.id] = ns
	s.onChange(len(s.m))
	return *ns
}

// get returns the live session of id.
func (s *sessions) get(id string) (session, bool) {
	if id == "" {
		return session{}, false
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	x, ok := s.m[id]
	if !ok {
		return session{}, false
	}
	if !now.Before(x.expires) {
		delete(s.m, id)
		s.onChange(len(s.m))
		return session{}, false
	}
	return *x, true
}

// end ends the session of id.
func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
	s.onChange(len(s.m))
}

func (s *sessions) expireLocked(now time.Time) {
	for id, x := range s.m {
		if !now.Before(x.expires) {
			delete(s.m, id)
		}
	}
}

// checkCSRF reports whether got is the session's CSRF token.
func (x session) checkCSRF(got string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(x.csrf)) == 1
}

// randomToken is 256 random bits, URL-safe.
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return base64.RawURLEncoding.EncodeToString(b)
}
