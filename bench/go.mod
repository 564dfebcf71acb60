module github.com/dstackai/dstack/bench

go 1.26.8

replace github.com/dstackai/dstack => ../
