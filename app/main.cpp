// lowbit: without a subcommand, the workbench window; with one, a headless job.
#include "cli_commands.h"

#include "core/build_info.h"
#include "runtime/language_model.h"

#include <cstdio>
#include <cstring>
#include <functional>
#include <map>

#if LOWBIT_WITH_GUI && __has_include("workbench.h")
#include "workbench.h"
#define LOWBIT_HAS_WORKBENCH 1
#endif

namespace {

struct Command {
    std::function<int(const std::vector<std::string> &)> run;
    const char *usage;
};

const std::map<std::string, Command> &commands() {
    using namespace lowbit::cli;
    static const std::map<std::string, Command> table = {
        {"info", {runInfo, "info MODEL [--tokenizer FILE] [--json]\n"
                           "      format, config, parameter count, bytes by dtype, memory needed"}},
        {"tokenize", {runTokenize, "tokenize (--model MODEL | --tokenizer FILE) --text STR [--bos] [--special] [--json]\n"
                                   "      token ids of a text: {\"ids\":[...]}"}},
        {"logits", {runLogits, "logits MODEL --tokens 1,2,3 [--device cpu|cuda[:N]] [--threads N] [--json]\n"
                               "      logit rows for every position: {\"logits\":[[...],...]}"}},
        {"generate", {runGenerate, "generate MODEL -p STR -n N [--temp T --top-k K --top-p P --seed S]\n"
                                   "      [--stop STR]... [--chat [--system STR]] [--no-bos] [--device cpu|cuda[:N]] [--threads N] [--json]"}},
        {"ppl", {runPerplexity, "ppl MODEL --text FILE --ctx N [--mode paper|llamacpp] [--chunks N]\n"
                                "      [--batch TOKENS] [--device cpu|cuda[:N]] [--threads N] [--json]   ->  {\"ppl\":x,\"nll\":y,\"tokens\":n}"}},
        {"quantize", {runQuantize, "quantize MODEL --method rtn|gptq|nf4|... --bits B --out DIR [--group G] [--sym]\n"
                                   "      [--calib FILE] [--calib-samples N] [--calib-len L] [--seed S] [--layers SPEC]\n"
                                   "      [--act-order] [--method-options JSON] [--no-true-sequential] [--hessian f32|f64]\n"
                                   "      [--tokenizer FILE] [--threads N] [--device cpu|cuda[:N]] [--json]\n"
                                   "      ->  a checkpoint directory any command loads (cuda: Hessians, Cholesky, GPTQ sweep on the GPU)"}},
        {"finetune", {runFinetune, "finetune MODEL --method qlora|irqlora|dbllm --data FILE --out DIR [--steps N --batch B\n"
                                   "      --micro-batch M --lr LR --schedule constant|cosine --warmup N --rank R --alpha A\n"
                                   "      --seq-len N --source-len N --target-len N --save-every N --seed S] [--resume]\n"
                                   "      [--format auto|alpaca|chat|oasst|text] [--train-on-source] [--no-merge] [--device cpu|cuda[:N]] [--json]\n"
                                   "      dbllm: [--distill-seqs N --distill-len N --distill-greedy N --weighting ambiguity|teacher|deviation|uniform\n"
                                   "      --temperature T --ce-weight W --dual-group G --no-latent] (no --data: FP-generated text)\n"
                                   "      LoRA on a quantized base -> OUT/adapter_model.safetensors + OUT/merged/"}},
        {"eval", {runEval, "eval MODEL --tasks a,b,c [--limit N --shots K --batch B --ctx N --seed S]\n"
                           "      [--mode paper|llamacpp] [--guard GUARD] [--kld-write FILE | --kld-base FILE]\n"
                           "      [--max-tokens N] [--bos] [--chat|--no-chat] [--data DIR] [--samples FILE.jsonl]\n"
                           "      [--options JSON] [--device cpu|cuda[:N]] [--threads N] [--json]   ->  metrics per task (lm-eval semantics)"}},
        {"tasks", {runTasks, "tasks [--data DIR] [--json]\n"
                             "      the evaluation tasks, their data files and whether they were found"}},
        {"run", {runRun, "run SPEC.json | run --model M --tasks a,b [--method none|rtn|gptq|... --bits B --group G\n"
                         "      --sym --layers S --calib FILE --calib-samples N --calib-len L --calib-seed S\n"
                         "      --method-options JSON] [--limit N --shots K --ctx N --batch B --task-options JSON]\n"
                         "      [--tokenizer FILE --device cpu|cuda[:N] --threads N --seed S] [--db DB] [--data DIR] [--force]\n"
                         "      a stored, resumable run; metrics, then the run id as the last line of stdout"}},
        {"resume", {runResume, "resume RUN [--db DB] [--data DIR]\n"
                               "      continue an interrupted, failed or cancelled run after its last stored sample"}},
        {"runs", {runRuns, "runs list [--model M --method X --task T --status S] | runs show RUN | runs delete RUN\n"
                           "      [--db DB] [--json]   the stored runs (list: one a line, id first)"}},
        {"compare", {runCompare, "compare RUN RUN... [--task T] [--resamples N] [--seed S] [--db DB] [--json]\n"
                                 "      metric deltas vs the first run; McNemar (accuracy) or paired bootstrap (NLL)"}},
        {"export", {runExport, "export RUN... --format csv|json|markdown|lm-eval --out PATH [--db DB]\n"
                               "      lm-eval: a folder with results_runN.json + samples_TASK_runN.jsonl"}},
        {"export-model", {runExportModel, "export-model DIR --format gptq|gguf --out PATH [--scale-dtype f16|bf16|f32] [--compact] [--json]\n"
                                          "      a quantized checkpoint as HF GPTQ (transformers/vLLM) or GGUF (llama.cpp)"}},
        {"sweep", {runSweep, "sweep plan|submit|status|collect|cancel|retry SWEEP.json [--backend local|slurm]\n"
                             "      [--task I]... [--db DB] [--data DIR] [--lowbit PATH] [--json]\n"
                             "      a methods x bits x tasks grid, here or as Slurm job arrays (docs/SWEEPS.md)"}},
    };
    return table;
}

void printHelp() {
    std::printf("lowbit %s (%s) - low-bit LLaMA-3 quantization workbench\n\n"
                "usage: lowbit                 start the workbench window\n"
                "       lowbit COMMAND ...     run a headless job\n\nheadless jobs:\n",
                LOWBIT_VERSION, LOWBIT_GIT_COMMIT);
    for (const auto &[name, command] : commands())
        std::printf("  %s\n", command.usage);
    std::printf("\nMODEL is a Hugging Face directory, a .gguf file, or a llama2.c .bin (its tokenizer\n"
                "via --tokenizer). Progress and errors go to stderr; --json prints machine-readable\n"
                "results on stdout.\n");
}

} // namespace

int main(int argc, char **argv) {
    if (argc >= 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
                      !std::strcmp(argv[1], "help"))) {
        printHelp();
        return 0;
    }
    if (argc >= 2 && !std::strcmp(argv[1], "--version")) {
        std::printf("lowbit %s (%s)\nCUDA toolkit at build time: %s; compute backends: %s\n",
                    LOWBIT_VERSION, LOWBIT_GIT_COMMIT, LOWBIT_HAVE_CUDA_TOOLKIT ? "found" : "absent",
                    lowbit::computeBackendsSummary().c_str());
        return 0;
    }
    if (argc >= 2 && argv[1][0] != '-') {
        const auto it = commands().find(argv[1]);
        if (it == commands().end()) {
            std::fprintf(stderr, "lowbit: unknown command '%s' (see lowbit --help)\n", argv[1]);
            return 2;
        }
        return it->second.run(std::vector<std::string>(argv + 2, argv + argc));
    }
#ifdef LOWBIT_HAS_WORKBENCH
    return runWorkbench(argc, argv);
#else
    printHelp();
    return argc >= 2 ? 2 : 0;
#endif
}
