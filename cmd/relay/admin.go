package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// adminClient calls a running relay's admin API (/v1/*) with the token from
// RELAY_ADMIN_TOKEN. The CLI commands that manage a relay share it.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

// newAdminClient checks -addr and the token; on a problem it says what to
// fix on stderr and returns false.
func newAdminClient(cmd, addr string, stderr io.Writer) (*adminClient, bool) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(strings.TrimRight(addr, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "relay %s: -addr %q must be an http(s) URL such as http://127.0.0.1:8080\n", cmd, addr)
		return nil, false
	}
	tok := os.Getenv("RELAY_ADMIN_TOKEN")
	if tok == "" {
		fmt.Fprintf(stderr, "relay %s: RELAY_ADMIN_TOKEN is not set; export the relay's http.admin_token\n", cmd)
		return nil, false
	}
	return &adminClient{base: u.String(), token: tok, http: &http.Client{Timeout: 60 * time.Second}}, true
}

// do calls the admin API; a non-2xx answer becomes an error with the
// relay's message and the HTTP status.
func (c *adminClient) do(ctx context.Context, method, path string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, fmt.Errorf("cannot reach the relay at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return resp.StatusCode, fmt.Errorf("%s (%s)", e.Error, resp.Status)
		}
		return resp.StatusCode, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}
