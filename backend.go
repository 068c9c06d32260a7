package dtma

// The platform's backend reads an instance's state in two places, with two
// different rules (see shared/reference/legacy-dtma-api.md):
//
//   - GET /status and /tools/status: it upper-cases tool_instances[].status
//     and maps PENDING, STARTING, STOPPING -> deploying; RUNNING -> running;
//     STOPPED -> stopped; ERROR -> error; anything else -> error.
//   - The heartbeat: it writes status_on_toolbox unmapped into a PostgreSQL
//     enum column; a word outside the enum fails that tool's update.
//
// BackendStatus and HeartbeatStatus give, for every state of an instance, a
// word of the enum that the respective rule turns into the true state:
//
//	DTMA state                          BackendStatus  HeartbeatStatus
//	deploying                           starting       deploying
//	starting, restarting                starting       starting
//	stopping                            stopping       stopping
//	removing                            stopping       deleting
//	running (Docker running or paused)  running        running
//	running, health check unhealthy     error          error_runtime
//	running, Docker restarting it       starting       starting
//	stopped (created, exited)           stopped        stopped
//	stopped, container dead             error          error
//	crashloop, error, missing           error          error
//
// "deploying" and "deleting" are enum words the /status mapping does not
// know (it would show error), so the status routes say "starting" and
// "stopping" instead, which it shows as deploying: an operation in
// progress, on which the backend takes no action. A tool stopped behind the
// agent's back is "stopped" — true, and the backend may start it. A
// container that vanished or loops is "error": the backend must not believe
// it serves. Nor must it believe so of a running tool that fails its
// health check: the heartbeat says "error_runtime" — the enum's word for a
// tool that was deployed and runs but does not work, which keeps it apart
// from a failed deploy or a vanished container ("error") — and /status
// says "error" (the only word its mapping turns into an error). A tool
// whose check has no verdict yet (starting) stays "running": Docker says
// so, and one that never comes up turns unhealthy after its start period
// and retries.

// BackendStatus returns the word for tool_instances[].status, the status of
// /tools/{ref}/status and the lifecycle answers on the legacy routes.
func BackendStatus(inst *Instance) string {
	switch st := backendState(inst); st {
	case StatusRunning:
		if inst.Health.State == HealthUnhealthy {
			return "error"
		}
		return "running"
	case StatusDeploying:
		return "starting"
	case StatusRemoving:
		return "stopping"
	default:
		return string(st)
	}
}

// HeartbeatStatus returns the word for status_on_toolbox in the heartbeat:
// always a value of the backend's enum.
func HeartbeatStatus(inst *Instance) string {
	switch st := backendState(inst); st {
	case StatusRunning:
		if inst.Health.State == HealthUnhealthy {
			return "error_runtime"
		}
		return "running"
	case StatusRemoving:
		return "deleting"
	default:
		return string(st)
	}
}

// backendState folds an instance's state onto the words both functions
// share: deploying, starting, stopping, removing, running, stopped, error.
func backendState(inst *Instance) Status {
	st := inst.Status
	if st == "" {
		st = inst.SettledStatus()
	}
	switch st {
	case StatusDeploying, StatusStopping, StatusRemoving:
		return st
	case StatusStarting, StatusRestarting:
		return StatusStarting
	case StatusRunning:
		if inst.DockerStatus == DockerRestarting {
			return StatusStarting
		}
		return StatusRunning
	case StatusStopped:
		if inst.DockerStatus == DockerDead {
			return StatusError
		}
		return StatusStopped
	}
	return StatusError // crashloop, error, missing, unknown
}
