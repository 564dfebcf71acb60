package initproc_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dstackai/dstack/internal/initproc"
)

// The tests run this test binary as PID 1 of a PID namespace of its own,
// with roleEnv naming what its child (started by initproc.Run) does.
const roleEnv = "INITPROC_TEST_ROLE"

func TestMain(m *testing.M) {
	role := os.Getenv(roleEnv)
	switch {
	case role == "":
		os.Exit(m.Run())
	case initproc.Needed():
		os.Exit(initproc.Run(os.Args[1:]))
	case role == "orphan":
		os.Exit(leaveAnOrphan())
	case role == "signal":
		os.Exit(awaitTerm())
	}
	os.Exit(2)
}

// leaveAnOrphan starts a shell that leaves a short-lived process behind,
// and exits 0 once that process, handed to PID 1, is reaped; 3 when it
// stays a zombie.
func leaveAnOrphan() int {
	out, err := exec.Command("sh", "-c", "sleep 0.1 & echo $!").Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sh:", err)
		return 2
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "pid:", err)
		return 2
	}
	// Signal 0 finds a zombie as it finds a live process: only a reaped
	// one is gone.
	for range 100 {
		if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "process %d, an orphan, is still there 5 s after it ended: a zombie\n", pid)
	return 3
}

// awaitTerm says "ready" and exits 42 on SIGTERM.
func awaitTerm() int {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	fmt.Println("ready")
	select {
	case <-c:
		return 42
	case <-time.After(30 * time.Second):
		return 2
	}
}

// asPID1 starts this test binary as PID 1 of a new PID namespace, in role.
func asPID1(t *testing.T, role string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if uid, gid := os.Getuid(), os.Getgid(); uid != 0 {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}}
	}
	return cmd
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if ee != nil {
		return ee.ExitCode()
	}
	return 0
}

func TestOrphansAreReaped(t *testing.T) {
	err := asPID1(t, "orphan").Run()
	if errors.Is(err, syscall.EPERM) {
		t.Skipf("this machine gives the test no PID namespace: %v", err)
	}
	if code := exitCode(t, err); code != 0 {
		t.Fatalf("the program as PID 1 exited %d; want 0: the orphan it was handed reaped", code)
	}
}

func TestSignalsReachTheChildAndItsExitIsPID1s(t *testing.T) {
	cmd := asPID1(t, "signal")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); errors.Is(err, syscall.EPERM) {
		t.Skipf("this machine gives the test no PID namespace: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child said %q, %v; want ready", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd.Wait()); code != 42 {
		t.Fatalf("PID 1 exited %d after SIGTERM; want the child's 42", code)
	}
}
