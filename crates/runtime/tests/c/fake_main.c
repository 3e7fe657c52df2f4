/* The standalone-executable main the generator emits, for the fake model (tests/exe_loader.rs).
 * FAKE_API=badver or FAKE_API=cpu selects a variant API. */
#include "pare_model_abi.h"
#include <stdlib.h>
#include <string.h>

const PareModelApi *fake_api(void);
const PareModelApi *fake_badver_api(void);
const PareModelApi *fake_cpu_api(void);

int main(int argc, char **argv) {
    const char *which = getenv("FAKE_API");
    const PareModelApi *api = fake_api();
    if (which && strcmp(which, "badver") == 0) api = fake_badver_api();
    if (which && strcmp(which, "cpu") == 0) api = fake_cpu_api();
    return pare_exe_main(argc, argv, api);
}
