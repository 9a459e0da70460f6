#include "workbench.h"

#include "main_window.h"

#include <QApplication>

namespace lowbit::ui {

int runWorkbench(int argc, char **argv) {
    QApplication app(argc, argv);
    // Organisation and application names decide where QSettings (recent files) are stored.
    QApplication::setOrganizationName(QStringLiteral("lowbit"));
    QApplication::setApplicationName(QStringLiteral("lowbit"));
    QApplication::setApplicationDisplayName(QStringLiteral("lowbit workbench"));

    MainWindow window;
    window.show();
    return app.exec();
}

} // namespace lowbit::ui
