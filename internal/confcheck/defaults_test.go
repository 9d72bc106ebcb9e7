package confcheck

import (
	"strings"
	"testing"
	"time"
)

func TestApplyDefaults(t *testing.T) {
	type inner struct {
		Window time.Duration `default:"10s"`
	}
	type section struct {
		Every    time.Duration `default:"30m"`
		Count    int           `default:"5"`
		Bytes    int64         `default:"1048576"`
		Rate     float64       `default:"2.5"`
		Name     string        `default:"cakework"`
		Set      int           `default:"7"`
		Untagged int
		On       bool
		Inner    inner
		List     []string
	}
	c := section{Set: 3}
	ApplyDefaults(&c)
	want := section{Every: 30 * time.Minute, Count: 5, Bytes: 1 << 20, Rate: 2.5, Name: "cakework", Set: 3, Inner: inner{Window: 10 * time.Second}}
	if c.Every != want.Every || c.Count != want.Count || c.Bytes != want.Bytes || c.Rate != want.Rate ||
		c.Name != want.Name || c.Set != want.Set || c.Untagged != 0 || c.On || c.Inner != want.Inner || c.List != nil {
		t.Fatalf("got %+v, want %+v", c, want)
	}
}

func TestApplyDefaultsBadTagPanics(t *testing.T) {
	defer func() {
		r := recover()
		if s, _ := r.(string); !strings.Contains(s, "Every") {
			t.Fatalf("panic %v, want one naming the field", r)
		}
	}()
	var c struct {
		Every time.Duration `default:"often"`
	}
	ApplyDefaults(&c)
}
