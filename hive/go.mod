module rbee.dev/hive

go 1.26

require rbee.dev/shared v0.0.0-00010101000000-000000000000

replace rbee.dev/shared => ../shared
