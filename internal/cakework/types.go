package cakework

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Build states the API documents. Other values are passed through as they
// come: an unknown status is still a status.
const (
	BuildCreated   = "created"
	BuildSucceeded = "succeeded"
	BuildFailed    = "failed"
)

// VM states the API documents. Fly.io adds transient ones (starting,
// stopping, destroying, suspended, replacing); those are passed through too.
const (
	VMCreated   = "created"
	VMStarted   = "started"
	VMStopped   = "stopped"
	VMDestroyed = "destroyed"
)

// Build is an image build. It marshals to the normalized shape: camelCase
// keys, times in RFC 3339 UTC, imageId only once there is one.
type Build struct {
	BuildID   string    `json:"buildId"`
	ImageID   string    `json:"imageId,omitempty"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"createdAt,omitzero"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
}

// Finished reports whether the build reached a final status.
func (b Build) Finished() bool { return b.Status == BuildSucceeded || b.Status == BuildFailed }

// UnmarshalJSON accepts every timestamp form the API uses and normalizes them
// to UTC. A build without a buildId is rejected: it cannot be told apart from
// a garbled answer.
func (b *Build) UnmarshalJSON(data []byte) error {
	var w struct {
		BuildID   string  `json:"buildId"`
		ImageID   string  `json:"imageId"`
		Status    string  `json:"status"`
		CreatedAt apiTime `json:"createdAt"`
		UpdatedAt apiTime `json:"updatedAt"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	if w.BuildID == "" {
		return errors.New("build without buildId")
	}
	*b = Build{
		BuildID: w.BuildID, ImageID: w.ImageID, Status: w.Status,
		CreatedAt: time.Time(w.CreatedAt), UpdatedAt: time.Time(w.UpdatedAt),
	}
	return nil
}

// VM is a one-shot or cached virtual machine. It marshals to the normalized
// shape (volumeGB, RFC 3339 UTC times).
type VM struct {
	ID        string    `json:"id"`
	Hostname  string    `json:"hostname,omitempty"`
	CPU       int       `json:"cpu"`
	Memory    int       `json:"memory"`
	ImageID   string    `json:"imageId"`
	State     string    `json:"state"`
	Port      *int      `json:"port,omitempty"`
	VolumeGB  int       `json:"volumeGB"`
	CreatedAt time.Time `json:"createdAt,omitzero"`
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
}

// UnmarshalJSON accepts every timestamp form and both volumeGB (docs) and
// volumeGb (published client). A VM without an id is rejected.
func (v *VM) UnmarshalJSON(data []byte) error {
	// encoding/json prefers an exact key match, so the two volume spellings
	// land in their own fields.
	var w struct {
		ID        string  `json:"id"`
		Hostname  string  `json:"hostname"`
		CPU       int     `json:"cpu"`
		Memory    int     `json:"memory"`
		ImageID   string  `json:"imageId"`
		State     string  `json:"state"`
		Port      *int    `json:"port"`
		VolumeGB  *int    `json:"volumeGB"`
		VolumeGb  *int    `json:"volumeGb"`
		CreatedAt apiTime `json:"createdAt"`
		UpdatedAt apiTime `json:"updatedAt"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	if w.ID == "" {
		return errors.New("vm without id")
	}
	vol := 0
	switch {
	case w.VolumeGB != nil:
		vol = *w.VolumeGB
	case w.VolumeGb != nil:
		vol = *w.VolumeGb
	}
	*v = VM{
		ID: w.ID, Hostname: w.Hostname, CPU: w.CPU, Memory: w.Memory,
		ImageID: w.ImageID, State: w.State, Port: w.Port, VolumeGB: vol,
		CreatedAt: time.Time(w.CreatedAt), UpdatedAt: time.Time(w.UpdatedAt),
	}
	return nil
}

// VMList is one page of listVMs. Pagination is empty on the last page.
type VMList struct {
	VMs        []VM   `json:"vms"`
	Pagination string `json:"pagination,omitempty"`
}

// UnmarshalJSON requires the vms key: an answer without it is not a list,
// and treating it as an empty one would make every VM look destroyed.
func (l *VMList) UnmarshalJSON(data []byte) error {
	var w struct {
		VMs        *[]VM  `json:"vms"`
		Pagination string `json:"pagination"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	if w.VMs == nil {
		return errors.New("vm list without vms")
	}
	*l = VMList{VMs: *w.VMs, Pagination: w.Pagination}
	if l.VMs == nil {
		l.VMs = []VM{}
	}
	return nil
}

// LogLine is one log line. Timestamp is unix milliseconds, as the API sends
// it; many lines can share one millisecond.
type LogLine struct {
	Timestamp int64  `json:"timestamp"`
	Level     string `json:"level"`
	Message   string `json:"message"`
}

// Time is the line's timestamp in UTC.
func (l LogLine) Time() time.Time { return time.UnixMilli(l.Timestamp).UTC() }

// UnmarshalJSON takes the timestamp as a JSON number of milliseconds or as a
// string in any of the API's forms. A line without a timestamp is rejected:
// a cursor cannot be kept over it.
func (l *LogLine) UnmarshalJSON(data []byte) error {
	var w struct {
		Timestamp *apiTime `json:"timestamp"`
		Level     string   `json:"level"`
		Message   string   `json:"message"`
	}
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	if w.Timestamp == nil || time.Time(*w.Timestamp).IsZero() {
		return errors.New("log line without timestamp")
	}
	ms := time.Time(*w.Timestamp).UnixMilli()
	if ms <= 0 {
		// 0 is what a missing value looks like after a careless encoder;
		// no Cakework line predates 1970.
		return errors.New("log line with a timestamp at or before 1970")
	}
	*l = LogLine{Timestamp: ms, Level: w.Level, Message: w.Message}
	return nil
}

// LogPage is one answer of a log endpoint. From and To are the server's
// strings, kept verbatim because the next page must send them back
// unchanged. Pagination is empty when the window has nothing more.
type LogPage struct {
	Lines      []LogLine `json:"lines"`
	Pagination string    `json:"pagination,omitempty"`
	From       string    `json:"from,omitempty"`
	To         string    `json:"to,omitempty"`
}

// UnmarshalJSON normalizes a missing lines key to an empty page.
func (p *LogPage) UnmarshalJSON(data []byte) error {
	type plain LogPage
	var w plain
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	if w.Lines == nil {
		w.Lines = []LogLine{}
	}
	*p = LogPage(w)
	return nil
}

// apiTime decodes a timestamp in any API form: a string ParseTime accepts, a
// JSON number of unix milliseconds, null or "" (zero time).
type apiTime time.Time

func (t *apiTime) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	switch {
	case bytes.Equal(data, []byte("null")):
		*t = apiTime{}
		return nil
	case len(data) > 0 && data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		if s == "" {
			*t = apiTime{}
			return nil
		}
		v, err := ParseTime(s)
		if err != nil {
			return err
		}
		*t = apiTime(v)
		return nil
	default:
		s := string(data)
		if !isDigits(s) {
			return fmt.Errorf("cakework: timestamp %s: want unix milliseconds or a string", clip(s))
		}
		v, err := ParseTime(s)
		if err != nil {
			return err
		}
		*t = apiTime(v)
		return nil
	}
}

// ImportImageRequest is the body of importImage. Password is a secret and is
// never logged.
type ImportImageRequest struct {
	ImageURI string `json:"imageUri"`
	Password string `json:"password,omitempty"`
}

// ImportImageResponse is importImage's answer.
type ImportImageResponse struct {
	ImageID string `json:"imageId"`
}

// BuildFile is one file of buildImageFromFiles. Dir "." is the root.
type BuildFile struct {
	Dir     string `json:"dir"`
	Name    string `json:"name"`
	Content string `json:"content"`
}

// BuildFromFilesRequest is the body of buildImageFromFiles.
type BuildFromFilesRequest struct {
	Dockerfile string      `json:"dockerfile"`
	Files      []BuildFile `json:"files"`
}

// BuildFromGithubRequest is the body of buildImageFromGithub. Token is a
// secret and is never logged.
type BuildFromGithubRequest struct {
	Dockerfile   string `json:"dockerfile"`
	Dockerignore string `json:"dockerignore,omitempty"`
	Token        string `json:"token"`
	Repository   string `json:"repository"`
	Branch       string `json:"branch"`
}

// StartVMRequest is the body of startVM. CPU is 1–8, Memory 256–16384 MB,
// VolumeGB 1–500 or 0 for none.
type StartVMRequest struct {
	ImageID  string            `json:"imageId"`
	CPU      int               `json:"cpu"`
	Memory   int               `json:"memory"`
	Port     *int              `json:"port,omitempty"`
	EnvVars  map[string]string `json:"envVars,omitempty"`
	VolumeGB int               `json:"volumeGB,omitempty"`
}

// CacheVMRequest is the body of cacheVM. The volume is called diskSize here.
type CacheVMRequest struct {
	ImageID  string            `json:"imageId"`
	CPU      int               `json:"cpu"`
	Memory   int               `json:"memory"`
	Port     *int              `json:"port,omitempty"`
	EnvVars  map[string]string `json:"envVars,omitempty"`
	DiskSize int               `json:"diskSize,omitempty"`
}

// ListVMsQuery filters listVMs. Empty fields are not sent.
type ListVMsQuery struct {
	ImageID    string
	Status     string
	Pagination string
}

// Decoding entry points, shared by the client and the fuzz targets so both
// exercise exactly the same code.

// DecodeBuild decodes a build answer. On error the result is the zero Build.
func DecodeBuild(data []byte) (Build, error) { return decode[Build](data) }

// DecodeVM decodes a VM answer. On error the result is the zero VM.
func DecodeVM(data []byte) (VM, error) { return decode[VM](data) }

// DecodeVMList decodes a listVMs answer. On error the result is the zero VMList.
func DecodeVMList(data []byte) (VMList, error) { return decode[VMList](data) }

// DecodeLogPage decodes a log answer. On error the result is the zero LogPage.
func DecodeLogPage(data []byte) (LogPage, error) { return decode[LogPage](data) }

func decode[T any](data []byte) (T, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		var zero T
		return zero, err
	}
	return v, nil
}
