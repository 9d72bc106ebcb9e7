package suggest

import "testing"

func TestClosest(t *testing.T) {
	for _, tc := range []struct {
		s    string
		max  int
		want string
	}{
		{"build.suceeded", 3, "build.succeeded"},
		{"vm.idel", 3, "vm.idle"},
		{"something-else", 3, ""},
		{"build.faile", 0, ""},
		{"build.failed", 0, "build.failed"},
	} {
		if got := Closest(tc.s, []string{"build.failed", "build.succeeded", "vm.idle"}, tc.max); got != tc.want {
			t.Errorf("Closest(%q, %d) = %q, want %q", tc.s, tc.max, got, tc.want)
		}
	}
	if d := Distance("kitten", "sitting"); d != 3 {
		t.Errorf("Distance = %d", d)
	}
}
