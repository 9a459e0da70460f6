namespace lowbit::ui {}
