package cakeworksim

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/cakework-relay/cakework-relay/internal/cakework"
)

func (s *Sim) importImage(w http.ResponseWriter, r *http.Request) {
	var req cakework.ImportImageRequest
	if err := readJSON(r, &req); err != nil {
		fail(w, r, http.StatusBadRequest, "invalid JSON body")
		return
	}
	if req.ImageURI == "" {
		fail(w, r, http.StatusBadRequest, "imageUri is required")
		return
	}
	s.mu.Lock()
	id := s.ulid()
	s.images[id] = struct{}{}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, cakework.ImportImageResponse{ImageID: id})
}

func (s *Sim) buildFromFiles(w http.ResponseWriter, r *http.Request) {
	var req cakework.BuildFromFilesRequest
	if err := readJSON(r, &req); err != nil {
		fail(w, r, http.StatusBadRequest, "invalid JSON body")
		return
	}
	if strings.TrimSpace(req.Dockerfile) == "" {
		fail(w, r, http.StatusBadRequest, "dockerfile is required")
		return
	}
	s.createBuildFromAPI(w, req.Dockerfile)
}

func (s *Sim) buildFromGithub(w http.ResponseWriter, r *http.Request) {
	var req cakework.BuildFromGithubRequest
	if err := readJSON(r, &req); err != nil {
		fail(w, r, http.StatusBadRequest, "invalid JSON body")
		return
	}
	switch {
	case strings.TrimSpace(req.Dockerfile) == "":
		fail(w, r, http.StatusBadRequest, "dockerfile is required")
		return
	case !strings.Contains(req.Repository, "/"):
		fail(w, r, http.StatusBadRequest, "repository must be owner/name")
		return
	case req.Token == "":
		fail(w, r, http.StatusBadRequest, "token is required")
		return
	}
	s.createBuildFromAPI(w, req.Dockerfile)
}

func (s *Sim) createBuildFromAPI(w http.ResponseWriter, dockerfile string) {
	s.mu.Lock()
	failBuild := s.rnd.Float64() < s.opts.BuildFailRatio
	switch {
	case strings.Contains(dockerfile, "sim:fail"):
		failBuild = true
	case strings.Contains(dockerfile, "sim:succeed"):
		failBuild = false
	}
	b := s.createBuild(BuildSpec{Fail: failBuild})
	s.mu.Unlock()
	// 201 here and 200 on startVM: create calls answered either.
	writeJSON(w, http.StatusCreated, toWireBuild(b))
}

func (s *Sim) getBuild(w http.ResponseWriter, r *http.Request) {
	if b, ok := lookup(s, w, r, s.builds, "build", buildOf); ok {
		writeJSON(w, http.StatusOK, toWireBuild(b))
	}
}

// lookup is a copy, made under s.mu by get, of what m holds at the
// request's {id}; without one it answers 404 "<what> not found".
func lookup[P, T any](s *Sim, w http.ResponseWriter, r *http.Request, m map[string]P, what string, get func(P) T) (T, bool) {
	s.mu.Lock()
	p, ok := m[r.PathValue("id")]
	var out T
	if ok {
		out = get(p)
	}
	s.mu.Unlock()
	if !ok {
		fail(w, r, http.StatusNotFound, what+" not found")
	}
	return out, ok
}

// vmRequest accepts both volume spellings and cacheVM's diskSize.
type vmRequest struct {
	ImageID  string            `json:"imageId"`
	CPU      int               `json:"cpu"`
	Memory   int               `json:"memory"`
	Port     *int              `json:"port"`
	EnvVars  map[string]string `json:"envVars"`
	VolumeGB *int              `json:"volumeGB"`
	VolumeGb *int              `json:"volumeGb"`
	DiskSize *int              `json:"diskSize"`
}

func (q *vmRequest) validate() string {
	if q.ImageID == "" {
		return "imageId is required"
	}
	if q.CPU == 0 {
		q.CPU = 1
	}
	if q.Memory == 0 {
		q.Memory = 256
	}
	if q.CPU < 1 || q.CPU > 8 {
		return "cpu must be between 1 and 8"
	}
	if q.Memory < 256 || q.Memory > 16384 {
		return "memory must be between 256 and 16384"
	}
	if v := q.volume(); v < 0 || v > 500 {
		return "volume must be between 1 and 500"
	}
	return ""
}

func (q *vmRequest) volume() int {
	for _, p := range []*int{q.VolumeGB, q.VolumeGb, q.DiskSize} {
		if p != nil {
			return *p
		}
	}
	return 0
}

func (s *Sim) startVM(w http.ResponseWriter, r *http.Request) {
	s.createVM(w, r, cakework.VMStarted, false, http.StatusOK)
}

// cacheVM answers a stopped VM, and 201 where startVM answers 200: create
// calls answered either.
func (s *Sim) cacheVM(w http.ResponseWriter, r *http.Request) {
	s.createVM(w, r, cakework.VMStopped, true, http.StatusCreated)
}

func (s *Sim) createVM(w http.ResponseWriter, r *http.Request, state string, cached bool, status int) {
	var req vmRequest
	if err := readJSON(r, &req); err != nil {
		fail(w, r, http.StatusBadRequest, "invalid JSON body")
		return
	}
	if msg := req.validate(); msg != "" {
		fail(w, r, http.StatusBadRequest, msg)
		return
	}
	s.mu.Lock()
	v := s.newVM(req, state, cached)
	s.mu.Unlock()
	writeJSON(w, status, toWireVM(v, fmtOffset, cached))
}

// newVM creates a VM from a request. Call with s.mu held.
func (s *Sim) newVM(req vmRequest, state string, cached bool) cakework.VM {
	now := s.clk.Now().UTC()
	v := cakework.VM{
		ID:       s.hex(14),
		Hostname: strings.ToLower(s.ulid()) + ".fly.dev",
		CPU:      req.CPU, Memory: req.Memory, ImageID: req.ImageID, State: state,
		Port: req.Port, VolumeGB: req.volume(), CreatedAt: now, UpdatedAt: now,
	}
	s.putVM(v, cached, true)
	return v
}

// putVM stores v and schedules its logging if it is started; boot writes
// the platform's start lines too. Call with s.mu held.
func (s *Sim) putVM(v cakework.VM, cached, boot bool) *simVM {
	sv := &simVM{v: v, cached: cached}
	s.vms[v.ID] = sv
	if v.State == cakework.VMStarted {
		if boot {
			s.vmStarted(sv, s.clk.Now())
		} else {
			sv.nextLog = s.clk.Now().Add(s.opts.VMLogEvery)
		}
	}
	return sv
}

// vmStarted writes the platform's boot lines and schedules app logs. Call
// with s.mu held.
func (s *Sim) vmStarted(v *simVM, now time.Time) {
	k := logKey{cakework.LogVM, v.v.ID}
	s.appendLog(k, now, "info", "[hypervisor] Starting instance "+v.v.ID)
	s.appendLog(k, now, "info", "[proxy] Machine "+v.v.ID+" is reachable at "+v.v.Hostname)
	v.nextLog = now.Add(s.opts.VMLogEvery)
}

func (s *Sim) getVM(w http.ResponseWriter, r *http.Request) {
	if v, ok := lookup(s, w, r, s.vms, "vm", vmOf); ok {
		writeJSON(w, http.StatusOK, toWireVM(v, fmtNoZone, false))
	}
}

func (s *Sim) stopVM(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	v, ok := s.vms[r.PathValue("id")]
	status, msg := http.StatusOK, ""
	switch {
	case !ok:
		status, msg = http.StatusNotFound, "vm not found"
	case v.v.State == cakework.VMStopped || v.v.State == cakework.VMDestroyed:
		status, msg = http.StatusConflict, "VM is already stopped"
	default:
		// stopVM is for one-shot VMs: stopping destroys.
		s.setState(v, cakework.VMDestroyed)
		s.stopsDone++
	}
	s.mu.Unlock()
	if status != http.StatusOK {
		fail(w, r, status, msg)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// setState moves a VM and logs what the platform would say. Call with s.mu
// held.
func (s *Sim) setState(v *simVM, state string) {
	if v.v.State == state {
		return
	}
	now := s.clk.Now()
	v.v.State = state
	v.v.UpdatedAt = now.UTC()
	k := logKey{cakework.LogVM, v.v.ID}
	switch state {
	case cakework.VMStarted:
		v.quiet = false
		s.vmStarted(v, now)
	case cakework.VMStopped:
		s.appendLog(k, now, "info", "[hypervisor] Machine stopped")
	case cakework.VMDestroyed:
		s.appendLog(k, now, "info", "[hypervisor] Machine destroyed")
	}
}

// cachedOp runs op on a cached VM, answering 404 if there is none.
func (s *Sim) cachedOp(w http.ResponseWriter, r *http.Request, op func(v *simVM) (int, string)) {
	s.mu.Lock()
	v, ok := s.vms[r.PathValue("id")]
	status, msg := http.StatusNotFound, "cached vm not found"
	if ok && v.cached {
		status, msg = op(v)
	}
	s.mu.Unlock()
	if status != http.StatusOK {
		fail(w, r, status, msg)
		return
	}
	// startCachedVM and stopCachedVM answer no body.
	w.WriteHeader(http.StatusOK)
}

func (s *Sim) startCachedVM(w http.ResponseWriter, r *http.Request) {
	s.cachedOp(w, r, func(v *simVM) (int, string) {
		if v.v.State == cakework.VMDestroyed {
			return http.StatusBadRequest, "cached vm is destroyed"
		}
		s.setState(v, cakework.VMStarted)
		return http.StatusOK, ""
	})
}

func (s *Sim) stopCachedVM(w http.ResponseWriter, r *http.Request) {
	s.cachedOp(w, r, func(v *simVM) (int, string) {
		if v.v.State == cakework.VMStopped || v.v.State == cakework.VMDestroyed {
			return http.StatusConflict, "VM is already stopped"
		}
		s.setState(v, cakework.VMStopped)
		return http.StatusOK, ""
	})
}

func (s *Sim) destroyCachedVM(w http.ResponseWriter, r *http.Request) {
	s.cachedOp(w, r, func(v *simVM) (int, string) {
		s.setState(v, cakework.VMDestroyed)
		return http.StatusOK, ""
	})
}

// listCursor is the listVMs pagination token: the position after the last
// VM served, plus the filters it was issued for.
type listCursor struct {
	Created int64  `json:"c"`
	ID      string `json:"i"`
	ImageID string `json:"m,omitempty"`
	Status  string `json:"s,omitempty"`
}

func (s *Sim) listVMs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	imageID, status := q.Get("imageId"), q.Get("status")
	var after *listCursor
	if tok := q.Get("pagination"); tok != "" {
		var c listCursor
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || json.Unmarshal(raw, &c) != nil || c.ID == "" {
			fail(w, r, http.StatusBadRequest, "invalid pagination token")
			return
		}
		if c.ImageID != imageID || c.Status != status {
			fail(w, r, http.StatusBadRequest, "pagination token does not match the filters")
			return
		}
		after = &c
	}
	s.mu.Lock()
	all := make([]cakework.VM, 0, len(s.vms))
	for _, v := range s.vms {
		if (imageID == "" || v.v.ImageID == imageID) && (status == "" || v.v.State == status) {
			all = append(all, v.v)
		}
	}
	size := s.listPageSize
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool {
		return vmLess(all[i].CreatedAt.UnixNano(), all[i].ID, all[j].CreatedAt.UnixNano(), all[j].ID)
	})
	start := 0
	if after != nil {
		start = sort.Search(len(all), func(i int) bool {
			return vmLess(after.Created, after.ID, all[i].CreatedAt.UnixNano(), all[i].ID)
		})
	}
	end := min(start+size, len(all))
	out := struct {
		VMs        []wireVM `json:"vms"`
		Pagination string   `json:"pagination,omitempty"`
	}{VMs: []wireVM{}}
	for _, v := range all[start:end] {
		out.VMs = append(out.VMs, toWireVM(v, fmtZ, false))
	}
	if end < len(all) {
		last := all[end-1]
		raw, _ := json.Marshal(listCursor{Created: last.CreatedAt.UnixNano(), ID: last.ID, ImageID: imageID, Status: status})
		out.Pagination = base64.RawURLEncoding.EncodeToString(raw)
	}
	writeJSON(w, http.StatusOK, out)
}

func vmLess(ac int64, aid string, bc int64, bid string) bool {
	if ac != bc {
		return ac < bc
	}
	return aid < bid
}
