# CUDA emulator (tests/cuda_emu): turns one .cu file into C++ for the emulator, unchanged except
#   name<<<grid, block[, smem[, stream]]>>>(args)  ->  ::lowbit_emu::launch(name, grid, ...)(args)
#   extern __shared__ T name[];                    ->  T *name = (T *)::lowbit_emu::dynamicShared();
# with cuda_emu/kernel.h included first and #line keeping the original file's line numbers.
# Usage: cmake -DINPUT=x.cu -DOUTPUT=x.cpp -P translate_cu.cmake
file(READ "${INPUT}" source)
string(REGEX REPLACE "([A-Za-z_][A-Za-z_0-9:]*(<[^<>;]*>)?)<<<([^;]*)>>>\\("
                     "::lowbit_emu::launch(\\1, \\3)(" source "${source}")
string(REGEX REPLACE "extern __shared__ ([A-Za-z_][A-Za-z_0-9]*) ([A-Za-z_][A-Za-z_0-9]*)\\[\\];"
                     "\\1 *\\2 = static_cast<\\1 *>(::lowbit_emu::dynamicShared());" source
                     "${source}")
if(source MATCHES "<<<|extern __shared__")
  message(FATAL_ERROR "translate_cu: ${INPUT} has a launch or shared array this script cannot rewrite")
endif()
file(WRITE "${OUTPUT}.tmp" "#include \"cuda_emu/kernel.h\"\n#line 1 \"${INPUT}\"\n${source}")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
