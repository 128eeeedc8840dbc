// Command awstest serves the local AWS emulator (Direct Connect, Network
// Synthetic Monitor, CloudWatch, STS) so probed can show AWS-side metrics
// without an AWS account:
//
//	awstest --listen 127.0.0.1:4599 &
//	AWS_ENDPOINT_URL=http://127.0.0.1:4599 AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo \
//	  probed --config.file=configs/example-mesh.yaml
//
// State changes during a demo go through the admin endpoint, e.g.
//
//	curl -X POST 'http://127.0.0.1:4599/_awstest/bgp?vif=dxvif-fp1k7x2q&peer=dxpeer-fp14k7x2q&status=down'
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/probed/probed/internal/awstest"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:4599", "Address to serve on.")
	fixture := flag.String("fixture", "", "Fixture file (JSON, see internal/awstest/testdata/sitelink-7.json); default: the built-in 7-site SiteLink mesh.")
	flag.Parse()

	var fx *awstest.Fixture
	if *fixture != "" {
		var err error
		if fx, err = awstest.LoadFixture(*fixture); err != nil {
			fmt.Fprintln(os.Stderr, "awstest:", err)
			os.Exit(2)
		}
	}
	srv := awstest.New(fx)
	url, err := srv.Start(*listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "awstest:", err)
		os.Exit(1)
	}
	fmt.Printf("awstest: serving Direct Connect, NSM, CloudWatch and STS at %s\n", url)
	fmt.Printf("  export AWS_ENDPOINT_URL=%s AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo\n", url)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	_ = srv.Close()
}
