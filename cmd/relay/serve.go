package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/cakework-relay/cakework-relay/internal/app"
	"github.com/cakework-relay/cakework-relay/internal/config"
)

func runCheckConfig(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: relay check-config FILE\n\nValidates FILE; prints a summary and exits 0, or lists every problem as key.path: what is wrong, and exits 1.")
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	return config.CheckConfig(fs.Arg(0), os.LookupEnv, stdout, stderr)
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := fs.String("config", "", "config file (YAML); with none, the defaults are used")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: relay serve [-config FILE]")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(*path, os.LookupEnv)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	log, err := app.NewLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	app.TuneRuntime()
	app.SetMemoryLimit(log, memlimit.FromCgroup)
	opts := app.Options{Config: cfg, Logger: log, Version: version}
	// Leave a second of the 5 s a supervisor allows for process exit.
	if err := app.Run(ctx, opts, 4*time.Second); err != nil {
		log.Error("relay stopped with an error", "err", err)
		return 1
	}
	return 0
}
