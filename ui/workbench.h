// The workbench entry point: app/main.cpp calls runWorkbench when no headless subcommand is given.
#pragma once

namespace lowbit::ui {

// Creates the QApplication and the main window and runs the event loop; returns its exit code.
// Call once, from main(), on the main thread.
int runWorkbench(int argc, char **argv);

} // namespace lowbit::ui

// main() calls it unqualified.
using lowbit::ui::runWorkbench;
