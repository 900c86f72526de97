// Package containerdtestsuite runs containerd's own snapshotter test suite
// (snapshots/testsuite) against pare-snapshotter through containerd's proxy
// client, one fresh daemon per case. It is built and run by
// tests/tests/privileged_containerd_testsuite.rs (GOPATH mode, Debian's
// /usr/share/gocode), which runs one case per process.
//
// Environment:
//
//	PARE_SNAPSHOTTER  the pare-snapshotter binary (required)
//	PARE_LOG_DIR      where the daemons' logs go (default: beside the daemon's root,
//	                  which the suite deletes after the case)
package containerdtestsuite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// readyTimeout bounds the wait for a new daemon to answer on its socket.
	readyTimeout = 10 * time.Second
	// stopTimeout bounds the wait for the daemon to exit after SIGTERM.
	stopTimeout = 10 * time.Second
	// snapshotterName is the name the proxy reports (as in containerd's config).
	snapshotterName = "pare"
)

func TestPare(t *testing.T) {
	bin := os.Getenv("PARE_SNAPSHOTTER")
	if bin == "" {
		t.Fatal("PARE_SNAPSHOTTER is not set: the pare-snapshotter binary to test")
	}
	testsuite.SnapshotterSuite(t, snapshotterName, func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		return newSnapshotter(ctx, bin, root)
	})
}

// daemon is one pare-snapshotter serving <root>/pare.sock with state in <root>/pare.
type daemon struct {
	root    string
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	logPath string
}

// newSnapshotter starts a daemon on root, waits until it answers and returns
// the proxy client and the case's cleanup.
func newSnapshotter(ctx context.Context, bin, root string) (snapshots.Snapshotter, func() error, error) {
	d, err := startDaemon(bin, root)
	if err != nil {
		return nil, nil, err
	}
	conn, err := d.waitReady(ctx)
	if err != nil {
		stopErr := d.stop()
		return nil, nil, join(err, stopErr)
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), snapshotterName)
	closed := false
	cleanup := func() error {
		if closed {
			return nil
		}
		closed = true
		// The suite's CloseTwice case closes the proxy itself; closing it again is harmless.
		closeErr := sn.Close()
		// A second Close of the connection reports "closing": not a failure.
		if err := conn.Close(); err != nil && status.Code(err) != codes.Canceled {
			closeErr = join(closeErr, fmt.Errorf("closing the grpc connection: %w", err))
		}
		return join(closeErr, d.stop())
	}
	return sn, cleanup, nil
}

func startDaemon(bin, root string) (*daemon, error) {
	logPath := filepath.Join(root, "pare-snapshotter.log")
	if dir := os.Getenv("PARE_LOG_DIR"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		// The suite's temporary directory (the parent of root) names the case's daemon.
		logPath = filepath.Join(dir, filepath.Base(filepath.Dir(root))+".log")
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(bin,
		"--root", filepath.Join(root, "pare"),
		"--address", filepath.Join(root, "pare.sock"),
		"--log-level", "info,pare_snapshotter=debug",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Its own process group: a signal meant for the test binary's group
	// (a terminal's ^C) does not race the cleanup below.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	d := &daemon{root: root, cmd: cmd, exited: make(chan struct{}), logPath: logPath}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	return d, nil
}

// waitReady dials the socket until a gRPC call gets an answer from the
// daemon (any status but Unavailable), for at most readyTimeout.
func (d *daemon) waitReady(ctx context.Context) (*grpc.ClientConn, error) {
	socket := filepath.Join(d.root, "pare.sock")
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-d.exited:
			return nil, fmt.Errorf("pare-snapshotter exited before serving (%v): %s", d.waitErr, d.logTail())
		default:
		}
		if _, err := os.Stat(socket); err == nil {
			conn, err := grpc.Dial("unix://"+socket, grpc.WithInsecure())
			if err != nil {
				return nil, fmt.Errorf("dialing %s: %w", socket, err)
			}
			callCtx, cancel := context.WithTimeout(ctx, time.Second)
			_, err = snapshotsapi.NewSnapshotsClient(conn).Stat(callCtx, &snapshotsapi.StatSnapshotRequest{
				Snapshotter: snapshotterName,
				Key:         "pare-testsuite-readiness-probe",
			})
			cancel()
			if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
				return conn, nil
			}
			conn.Close()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pare-snapshotter did not answer on %s within %v: %s", socket, readyTimeout, d.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits up to stopTimeout (then SIGKILL), detaches
// every mount left under the root (views may be served by processes that
// outlive the daemon) and kills every process left whose command line
// names the root. It reports a daemon that ignored SIGTERM or exited with
// an error; what is left behind by design is only cleaned up.
func (d *daemon) stop() error {
	var stopErr error
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		stopErr = fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-d.exited:
		if d.waitErr != nil {
			stopErr = join(stopErr, fmt.Errorf("pare-snapshotter exited with %v after SIGTERM: %s", d.waitErr, d.logTail()))
		}
	case <-time.After(stopTimeout):
		_ = d.cmd.Process.Kill()
		<-d.exited
		stopErr = join(stopErr, fmt.Errorf("pare-snapshotter ignored SIGTERM for %v (killed): %s", stopTimeout, d.logTail()))
	}
	if err := detachMountsUnder(d.root); err != nil {
		stopErr = join(stopErr, err)
	}
	killProcessesNaming(d.root)
	return stopErr
}

// detachMountsUnder lazily unmounts every mount at or beneath dir, deepest first.
func detachMountsUnder(dir string) error {
	for attempt := 0; attempt < 10; attempt++ {
		mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
		if err != nil {
			return fmt.Errorf("reading mountinfo: %w", err)
		}
		if len(mounts) == 0 {
			return nil
		}
		sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Mountpoint) > len(mounts[j].Mountpoint) })
		for _, m := range mounts {
			_ = unix.Unmount(m.Mountpoint, unix.MNT_DETACH)
		}
	}
	return fmt.Errorf("mounts left under %s after 10 rounds of umount -l", dir)
}

// killProcessesNaming SIGKILLs every process (but this one) with an argument
// that is dir or names a path beneath it, e.g. `pare-snapshotter serve-view
// ...` children.
func killProcessesNaming(dir string) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(cmdline), "\x00") {
			if arg == dir || strings.Contains(arg, dir+"/") {
				_ = unix.Kill(pid, unix.SIGKILL)
				break
			}
		}
	}
}

// logTail is the end of the daemon's log, for error messages.
func (d *daemon) logTail() string {
	data, err := os.ReadFile(d.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "log " + d.logPath + ":\n" + strings.Join(lines, "\n")
}

// join reports both errors (errors.Join is Go 1.20; Debian bookworm has 1.19).
func join(a, b error) error {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	default:
		return fmt.Errorf("%v; %w", a, b)
	}
}
