package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestWatchCLI(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"missing or wrong admin token"}`))
			return
		}
		got = append(got, r.Method+" "+r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPut {
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte(`{"ok":true,"added":true}`))
			return
		}
		w.Write([]byte(`{"ok":true,"removed":true}`))
	}))
	defer srv.Close()
	t.Setenv("RELAY_ADMIN_TOKEN", "tok")
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"watch", "-h"}, 0, ""},
		{[]string{"watch", "build"}, 2, "want a kind and an id"},
		{[]string{"watch", "image", "x"}, 2, "unknown kind"},
		{[]string{"watch", "build", "bad/id"}, 2, "not a valid id"},
		{[]string{"watch", "-addr", srv.URL, "build", "b1"}, 0, "watching build b1"},
		{[]string{"unwatch", "build", "b1", "-addr", srv.URL}, 0, "no longer watching build b1"},
		{[]string{"watch", "-addr", srv.URL, "function-build", "f1"}, 0, "watching function-build f1"},
		{[]string{"watch", "-addr", "http://127.0.0.1:1", "build", "b1"}, 1, "cannot reach the relay"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stdout.String()+stderr.String(), tc.out) {
			t.Errorf("%v: exit %d (want %d)\nstdout: %s\nstderr: %s", tc.args, code, tc.code, stdout.String(), stderr.String())
		}
	}
	t.Setenv("RELAY_ADMIN_TOKEN", "wrong")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"watch", "-addr", srv.URL, "build", "b1"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "401") {
		t.Errorf("wrong token: exit %d, %s", code, stderr.String())
	}
	want := []string{"PUT /v1/watches/builds/b1", "DELETE /v1/watches/builds/b1", "PUT /v1/watches/function-builds/f1"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("requests %v, want %v", got, want)
	}
}
