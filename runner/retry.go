package runner

import (
	"errors"

	"github.com/dstackai/dstack/api"
	"github.com/dstackai/dstack/client"
)

// errLeaseLost says the job was taken from this runner: drop it.
var errLeaseLost = errors.New("the job is no longer assigned to this runner")

func isLeaseLost(err error) bool {
	return errors.Is(err, errLeaseLost) || client.IsCode(err, api.CodeLeaseLost)
}

func isUnauthenticated(err error) bool { return client.IsCode(err, api.CodeUnauthenticated) }
