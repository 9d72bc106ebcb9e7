package cakework

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// Call names, as the reference names them. They appear in errors (Op) and
// are the simulator's route names.
const (
	opImportImage          = "importImage"
	opBuildImageFromFiles  = "buildImageFromFiles"
	opBuildImageFromGithub = "buildImageFromGithub"
	opGetBuild             = "getBuild"
	opGetBuildLogs         = "getBuildLogs"
	opStartVM              = "startVM"
	opStopVM               = "stopVM"
	opGetVM                = "getVM"
	opListVMs              = "listVMs"
	opGetVMLogs            = "getVMLogs"
	opCacheVM              = "cacheVM"
	opStartCachedVM        = "startCachedVM"
	opStopCachedVM         = "stopCachedVM"
	opDestroyCachedVM      = "destroyCachedVM"
	opGetCachedVMLogs      = "getCachedVMLogs"
	opGetFunctionBuildLogs = "getFunctionBuildLogs"
)

func esc(id string) string { return url.PathEscape(id) }

// errEmptyID keeps an empty id from turning /v1/vm/{id} into another route.
func errEmptyID(op string) error { return errors.New("cakework " + op + ": empty id") }

// getOne GETs the resource at prefix+id, decoded by decode.
func getOne[T any](ctx context.Context, c *Client, op, prefix, id string, decode func([]byte) (T, error)) (T, error) {
	if id == "" {
		var zero T
		return zero, errEmptyID(op)
	}
	return doJSON(ctx, c, call{op: op, method: http.MethodGet, path: prefix + esc(id)}, decode)
}

// postAction POSTs, with no body, to the action route prefix+id+"/"+action
// of one resource; the answer's body is not read.
func (c *Client) postAction(ctx context.Context, op, prefix, id, action string) error {
	if id == "" {
		return errEmptyID(op)
	}
	_, err := c.do(ctx, call{op: op, method: http.MethodPost, path: prefix + esc(id) + "/" + action})
	return err
}

// ImportImage imports an image from an existing ECR repository.
func (c *Client) ImportImage(ctx context.Context, req ImportImageRequest) (ImportImageResponse, error) {
	cl := call{op: opImportImage, method: http.MethodPost, path: "/v1/image/import", body: req}
	return doJSON(ctx, c, cl, func(b []byte) (ImportImageResponse, error) {
		r, err := decode[ImportImageResponse](b)
		if err == nil && r.ImageID == "" {
			return ImportImageResponse{}, errors.New("import answer without imageId")
		}
		return r, err
	})
}

// BuildImageFromFiles starts a build from inline files. The answer's status
// is "created"; watch it with GetBuild or a build webhook.
func (c *Client) BuildImageFromFiles(ctx context.Context, req BuildFromFilesRequest) (Build, error) {
	cl := call{op: opBuildImageFromFiles, method: http.MethodPost, path: "/v1/image/build/files", body: req}
	return doJSON(ctx, c, cl, DecodeBuild)
}

// BuildImageFromGithub starts a build from a GitHub repository.
func (c *Client) BuildImageFromGithub(ctx context.Context, req BuildFromGithubRequest) (Build, error) {
	cl := call{op: opBuildImageFromGithub, method: http.MethodPost, path: "/v1/image/build/github", body: req}
	return doJSON(ctx, c, cl, DecodeBuild)
}

// GetBuild reads one build. ImageID is empty until it succeeded.
func (c *Client) GetBuild(ctx context.Context, buildID string) (Build, error) {
	return getOne(ctx, c, opGetBuild, "/v1/image/build/", buildID, DecodeBuild)
}

// StartVM starts a one-shot VM.
func (c *Client) StartVM(ctx context.Context, req StartVMRequest) (VM, error) {
	cl := call{op: opStartVM, method: http.MethodPost, path: "/v1/vm/start", body: req}
	return doJSON(ctx, c, cl, DecodeVM)
}

// StopVM stops (and so destroys) a one-shot VM.
//
// A 409 means the VM was already stopped. StopVM returns it as an *APIError
// for which IsAlreadyStopped is true, so callers can tell "I stopped it" from
// "it was already stopped"; callers treat both as success:
//
//	if err := c.StopVM(ctx, id); err != nil && !cakework.IsAlreadyStopped(err) { ... }
func (c *Client) StopVM(ctx context.Context, vmID string) error {
	return c.postAction(ctx, opStopVM, "/v1/vm/", vmID, "stop")
}

// GetVM reads one VM.
func (c *Client) GetVM(ctx context.Context, vmID string) (VM, error) {
	return getOne(ctx, c, opGetVM, "/v1/vm/", vmID, DecodeVM)
}

// ListVMs reads one page of VMs. Pass the answer's Pagination back in
// q.Pagination for the next page; an empty Pagination means the last page.
func (c *Client) ListVMs(ctx context.Context, q ListVMsQuery) (VMList, error) {
	v := url.Values{}
	if q.ImageID != "" {
		v.Set("imageId", q.ImageID)
	}
	if q.Status != "" {
		v.Set("status", q.Status)
	}
	if q.Pagination != "" {
		v.Set("pagination", q.Pagination)
	}
	cl := call{op: opListVMs, method: http.MethodGet, path: "/v1/vms", query: v}
	return doJSON(ctx, c, cl, DecodeVMList)
}

// ErrIncompleteList is returned by ListAllVMs when the pages did not end
// within its budget, or the server repeated a token.
var ErrIncompleteList = errors.New("vm list incomplete")

// ListAllVMs pages through listVMs until the last page, for at most maxPages
// pages. It returns every VM or an error, never a partial list: a sweep that
// did not finish must not make missing VMs look destroyed.
func (c *Client) ListAllVMs(ctx context.Context, q ListVMsQuery, maxPages int) ([]VM, error) {
	var all []VM
	seen := map[string]bool{}
	for page := 0; page < maxPages; page++ {
		l, err := c.ListVMs(ctx, q)
		if err != nil {
			return nil, err
		}
		all = append(all, l.VMs...)
		if l.Pagination == "" {
			if all == nil {
				all = []VM{}
			}
			return all, nil
		}
		if seen[l.Pagination] {
			return nil, fmt.Errorf("cakework listVMs: token repeated after %d pages: %w", page+1, ErrIncompleteList)
		}
		seen[l.Pagination] = true
		q.Pagination = l.Pagination
	}
	return nil, fmt.Errorf("cakework listVMs: more than %d pages: %w", maxPages, ErrIncompleteList)
}

// CacheVM creates a cached VM. It answers the VM in state "stopped"; start it
// with StartCachedVM.
func (c *Client) CacheVM(ctx context.Context, req CacheVMRequest) (VM, error) {
	cl := call{op: opCacheVM, method: http.MethodPost, path: "/v1/vm/cache", body: req}
	return doJSON(ctx, c, cl, DecodeVM)
}

// StartCachedVM starts a cached VM. The API answers no body.
func (c *Client) StartCachedVM(ctx context.Context, id string) error {
	return c.postAction(ctx, opStartCachedVM, "/v1/vm/cached/", id, "start")
}

// StopCachedVM stops a cached VM, which can be started again. A 409 is
// reported like StopVM's: IsAlreadyStopped is true and callers treat it as
// success.
func (c *Client) StopCachedVM(ctx context.Context, id string) error {
	return c.postAction(ctx, opStopCachedVM, "/v1/vm/cached/", id, "stop")
}

// DestroyCachedVM destroys a cached VM. It uses the documented route
// /v1/vm/cached/{id}/destroy (the old client used /v1/vm/{id}/destroy).
func (c *Client) DestroyCachedVM(ctx context.Context, id string) error {
	return c.postAction(ctx, opDestroyCachedVM, "/v1/vm/cached/", id, "destroy")
}
