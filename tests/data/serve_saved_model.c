/* Runs requests on a SavedModel the way tensorflow_model_server does, with no Python:
 * TensorFlow's C API loads the "serve" MetaGraph into a session (TF_LoadSessionFromSavedModel,
 * the C++ SavedModelBundle loader TF Serving uses), feeds one uint8 [1, H, W, 3] image to a
 * signature's input tensor twice (two requests) and prints the fetched labels (uint8 or uint16),
 * space-separated, on stdout.
 *
 * Like tensorflow_model_server, it disables XLA compilation unless given
 * --xla_cpu_compilation_enabled=true: the server's main() calls
 * tensorflow::DisableXlaCompilation() (tensorflow/compiler/jit/flags.h) then. That C++
 * function takes and returns nothing, so C calls it by its mangled name, which
 * libtensorflow_cc.so.2 exports.
 *
 * usage: serve_saved_model EXPORT INPUT_TENSOR OUTPUT_TENSOR PIXELS HEIGHT WIDTH
 *            [--xla_cpu_compilation_enabled=true]
 * INPUT_TENSOR and OUTPUT_TENSOR are the SignatureDef's tensor names ("op:index"); PIXELS is a
 * file of HEIGHT * WIDTH * 3 bytes. Exit status 2 and the TensorFlow error on stderr when the
 * load or a request fails ("request N failed: ..."). tests/test_serving_c_api.py compiles
 * and runs it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tensorflow/c/c_api.h>

extern void _ZN10tensorflow21DisableXlaCompilationEv(void);

static void check(TF_Status *status, const char *what) {
  if (TF_GetCode(status) != TF_OK) {
    fprintf(stderr, "%s failed: %s\n", what, TF_Message(status));
    exit(2);
  }
}

static TF_Output tensor_named(TF_Graph *graph, const char *name) {
  char op[1024];
  const char *colon = strrchr(name, ':');
  size_t length = colon ? (size_t)(colon - name) : strlen(name);
  if (length >= sizeof op) length = sizeof op - 1;
  memcpy(op, name, length);
  op[length] = '\0';
  TF_Output tensor = {TF_GraphOperationByName(graph, op), colon ? atoi(colon + 1) : 0};
  if (!tensor.oper) {
    fprintf(stderr, "the graph has no operation %s\n", op);
    exit(2);
  }
  return tensor;
}

int main(int argc, char **argv) {
  if (argc != 7 && !(argc == 8 && strcmp(argv[7], "--xla_cpu_compilation_enabled=true") == 0)) {
    fprintf(stderr, "usage: %s EXPORT INPUT_TENSOR OUTPUT_TENSOR PIXELS HEIGHT WIDTH "
            "[--xla_cpu_compilation_enabled=true]\n", argv[0]);
    return 1;
  }
  if (argc == 7) _ZN10tensorflow21DisableXlaCompilationEv();

  int64_t dims[4] = {1, atoll(argv[5]), atoll(argv[6]), 3};
  size_t bytes = (size_t)(dims[1] * dims[2] * 3);
  TF_Tensor *image = TF_AllocateTensor(TF_UINT8, dims, 4, bytes);
  FILE *pixels = fopen(argv[4], "rb");
  if (!pixels || fread(TF_TensorData(image), 1, bytes, pixels) != bytes) {
    fprintf(stderr, "cannot read %zu bytes from %s\n", bytes, argv[4]);
    return 1;
  }
  fclose(pixels);

  TF_Status *status = TF_NewStatus();
  TF_Graph *graph = TF_NewGraph();
  TF_SessionOptions *options = TF_NewSessionOptions();
  const char *tags[] = {"serve"};
  TF_Session *session =
      TF_LoadSessionFromSavedModel(options, NULL, argv[1], tags, 1, graph, NULL, status);
  check(status, "TF_LoadSessionFromSavedModel");
  TF_Output input = tensor_named(graph, argv[2]), output = tensor_named(graph, argv[3]);
  /* Two requests, as a server answers one after another: the second shows whether a
     failure of the first (e.g. a compilation) persists. */
  TF_Tensor *labels = NULL;
  int failed = 0;
  for (int request = 1; request <= 2; ++request) {
    if (labels) TF_DeleteTensor(labels);
    labels = NULL;
    TF_SessionRun(session, NULL, &input, &image, 1, &output, &labels, 1, NULL, 0, NULL, status);
    if (TF_GetCode(status) != TF_OK) {
      fprintf(stderr, "request %d failed: %s\n", request, TF_Message(status));
      failed = 1;
    }
  }
  if (failed) return 2;
  size_t count = TF_TensorElementCount(labels);
  const void *data = TF_TensorData(labels);
  if (TF_TensorType(labels) != TF_UINT8 && TF_TensorType(labels) != TF_UINT16) {
    fprintf(stderr, "the output is not uint8 or uint16 but TF_DataType %d\n",
            TF_TensorType(labels));
    return 2;
  }
  for (size_t i = 0; i < count; ++i) {
    int value = TF_TensorType(labels) == TF_UINT8 ? ((const uint8_t *)data)[i]
                                                   : ((const uint16_t *)data)[i];
    printf(i ? " %d" : "%d", value);
  }
  printf("\n");
  return 0;
}
