{
  "targets": [
    {
      "target_name": "lasp_native",
      "sources": [
        "native/src/addon.cc",
        "native/src/threadpool.cc",
        "native/src/vecmath.cc",
        "native/src/random.cc",
        "native/src/gemm.cc",
        "native/src/linear_attention.cc",
        "native/src/block_summary.cc",
        "native/src/softmax_attention.cc",
        "native/src/model_ops.cc",
        "native/src/short_conv.cc",
        "native/src/buffer_pool.cc",
        "native/src/h2_conn.cc",
        "native/src/h2_addon.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-math-errno"],
      "ldflags": ["-pthread"]
    }
  ]
}
