module rbee.dev/queen

go 1.26

require (
	rbee.dev/hive v0.0.0-00010101000000-000000000000
	rbee.dev/shared v0.0.0-00010101000000-000000000000
)

replace (
	rbee.dev/hive => ../hive
	rbee.dev/shared => ../shared
)
