// The focal-loss kernel built for AVX-512 F/BW/VL/DQ + FMA (16 float lanes): setup.py compiles this file with
// -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -DCPU_CAPABILITY=AVX512 -DCPU_CAPABILITY_AVX512 into
// fltool_plugins._focal_ext_avx512, which fltool_plugins.losses imports only on a CPU that has all of them. The code is
// focal_loss.cpp's; a file of its own gives the build its own object.
#include "focal_loss.cpp"
