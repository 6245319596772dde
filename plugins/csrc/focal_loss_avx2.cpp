// The focal-loss kernel built for AVX2 + FMA (8 float lanes): setup.py compiles this file with -mavx2 -mfma
// -DCPU_CAPABILITY=AVX2 -DCPU_CAPABILITY_AVX2 into fltool_plugins._focal_ext_avx2, which fltool_plugins.losses imports
// only on a CPU that has both. The code is focal_loss.cpp's; a file of its own gives the build its own object.
#include "focal_loss.cpp"
