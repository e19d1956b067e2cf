module rbee.dev/shared

go 1.26
