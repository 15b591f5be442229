// kvserve synth: write a random-weight GGUF in a real model's shape.
#include <cstdio>

#include "cli/common.h"
#include "model/synth.h"

namespace kvserve::cli {

namespace {

struct SynthFlags {
  std::string preset;
  std::string dtype = "f16";
  std::string out;
  uint64_t seed = 0;
  bool list = false;
};

int run(const SynthFlags& f) {
  if (f.list) {
    for (const auto& name : synth_preset_names()) std::printf("%s\n", name.c_str());
    return 0;
  }
  if (f.preset.empty() || f.out.empty()) return report(invalid_argument("synth needs --preset and -o"));
  auto t = dtype_from_name(f.dtype);
  if (!t || !(*t == DType::kF32 || *t == DType::kF16 || *t == DType::kQ8_0 || *t == DType::kQ4_0)) {
    return report(invalid_argument("--dtype must be f32, f16, q8_0 or q4_0, got '" + f.dtype + "'"));
  }
  SynthOptions so;
  so.preset = f.preset;
  so.dtype = *t;
  so.out_path = f.out;
  so.seed = f.seed;
  Status st = write_synth_model(so);
  if (!st.is_ok()) return report(st);
  std::fprintf(stderr, "kvserve: wrote %s (%s, %s, seed %llu)\n", f.out.c_str(), f.preset.c_str(),
               f.dtype.c_str(), static_cast<unsigned long long>(f.seed));
  return 0;
}

}  // namespace

void register_synth(CLI::App& app, int* rc) {
  auto f = std::make_shared<SynthFlags>();
  CLI::App* sub = app.add_subcommand("synth", "write a random-weight GGUF in a real model's shape");
  sub->add_option("--preset", f->preset, "model shape (see --list)");
  sub->add_option("--dtype", f->dtype, "f32, f16, q8_0 or q4_0")->capture_default_str();
  sub->add_option("-o,--output", f->out, "output .gguf path");
  sub->add_option("--seed", f->seed, "random seed")->capture_default_str();
  sub->add_flag("--list", f->list, "list the presets");
  sub->callback([f, rc] { *rc = run(*f); });
}

}  // namespace kvserve::cli
