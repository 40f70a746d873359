// Single-precision GEMM for the kernels and the model layers.
//
// Row-major: C[M×N] = alpha · op(A)[M×K] · op(B)[K×N] + beta · C, where op(X) is X or X^T.
// lda/ldb/ldc are the row strides of A, B, C as stored. beta == 0 never reads C (it may hold
// garbage). The instruction set (AVX-512, AVX2+FMA, or portable C++) is picked at run time
// from what the CPU reports, never from the build machine.
#pragma once

namespace lasp {

// Single-threaded; meant for the small, cache-resident products inside a chunk.
void sgemm(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
           const float* B, int ldb, float beta, float* C, int ldc);

// Multi-threaded over the shared pool (threadpool.h); for large products.
void sgemm_mt(bool transA, bool transB, int M, int N, int K, float alpha, const float* A, int lda,
              const float* B, int ldb, float beta, float* C, int ldc);

// "avx512", "avx2" or "generic": the path sgemm takes on this CPU.
const char* gemm_isa();

}  // namespace lasp
