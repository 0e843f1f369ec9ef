// The process's c10d process group, as torch.distributed's default group: joined once from the
// variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT), rendezvous through c10d's TCPStore (rank 0 serves it), Gloo on the CPU. One
// process is one rank, so one group per process; collectives and the gradient averaging use it.
// No c10d type appears here: without Gloo's headers (a libtorch built without them, or Debian's
// without libgloo-dev) the addon builds without the CPU backend and joining says so.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace torch_bert {

// Where this process stands in the job, from torchrun's variables.
struct RankEnvironment {
  int rank = 0;
  int worldSize = 1;
  int localRank = 0;
  int localWorldSize = 1;
  std::string masterAddr;
  uint16_t masterPort = 0;
};

// The variables read and checked; a missing or malformed one is a runtime_error naming it.
RankEnvironment ReadRankEnvironment();

// The backends this build can create: "gloo" when built with Gloo's headers, and "nccl" too when
// built against a CUDA libtorch 2.x with NCCL's headers (TORCH_BERT_NCCL).
std::vector<std::string> AvailableBackends();

// Joins the group: rank 0 serves the TCPStore on MASTER_PORT, every rank connects to it and
// Gloo connects the ranks to each other. `timeout` bounds the rendezvous and every collective
// afterwards (a dead or hung rank fails the others' next collective within it). Clear
// runtime_errors for a port in use, an unreachable master, something else on the master's port,
// a master gone during the join, ranks with different WORLD_SIZE, a RANK started twice, a
// rendezvous that times out and one cancelled. Throws when already joined. Blocks: run it off the
// JS thread.
RankEnvironment JoinProcessGroup(std::chrono::milliseconds timeout);

// Stops a join in progress (from another thread) at its next look at the rendezvous, within
// about a second: it then throws. The waits for the master and for the other ranks look; a read
// from a master that accepts the connection and never answers is cut off (StoreWatchdog).
void CancelJoin();

// Clears an earlier join's cancel: called when a join is queued, before it runs (a cancel that
// comes while it waits in the queue then stops it as soon as it starts).
void ClearJoinCancel();

// The joined group's backends, as init_process_group names them: "cpu:gloo,cuda:nccl" when CUDA
// tensors go to NCCL (TORCH_BERT_NCCL builds with a GPU for every local rank), else "gloo".
std::string GroupBackend();

// The rank's GPU made current on the calling thread, where the group's CUDA tensors go to NCCL
// (the join makes it current on the thread that joined, AddNccl); else nothing.
void UseRankDevice();

// Whether this process has joined (and not left).
bool InProcessGroup();

// The joined group's place (throws when not joined).
const RankEnvironment& GroupEnvironment();

// Leaves the group (the store and Gloo's connections closed). No-op when not joined.
void LeaveProcessGroup();

}  // namespace torch_bert
