package httpapi

import (
	"testing"
	"time"
)

func TestWithDefaults(t *testing.T) {
	got := Config{}.WithDefaults()
	want := Config{Listen: DefaultListen, MaxBodyBytes: 1 << 20, MaxBodyBytesInFlight: 32 << 20, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	set := Config{Listen: ":9", MaxBodyBytes: 1, MaxBodyBytesInFlight: 1, ReadTimeout: time.Second, WriteTimeout: time.Second}
	if got := set.WithDefaults(); got != set {
		t.Fatalf("set fields changed: %+v", got)
	}
}
