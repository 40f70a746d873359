// A small fixed thread pool shared by every native kernel.
//
// parallel_for(n, fn) runs fn(0..n-1) on the pool's workers and on the calling thread, and
// returns when all n calls have finished. Several callers (e.g. concurrent AsyncWorkers on the
// libuv pool) may use it at once, and it may be nested: the caller always works on its own job,
// so progress never depends on a free worker. Threads: LASP_THREADS, else hardware concurrency.
#pragma once
#include <functional>

namespace lasp {

void parallel_for(int n, const std::function<void(int)>& fn);

// Number of threads that may run a parallel_for at once (workers + caller).
int num_threads();

}  // namespace lasp
