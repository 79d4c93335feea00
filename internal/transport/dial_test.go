package transport

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSplitURLs(t *testing.T) {
	urls, err := SplitURLs(" amqp://u:p@a:5672/ , amqps://u:q@b:5671/vh,amqp://c/ ,")
	require.NoError(t, err)
	assert.Equal(t, []string{"amqp://u:p@a:5672/", "amqps://u:q@b:5671/vh", "amqp://c/"}, urls)

	urls, err = SplitURLs("amqp://u:p%2Cq@a/")
	require.NoError(t, err)
	assert.Equal(t, []string{"amqp://u:p%2Cq@a/"}, urls, "an encoded comma stays in the password")

	for _, bad := range []string{"", " , ", "http://a/", "amqp://u:secret@a/,nonsense://u:secret@b/"} {
		_, err := SplitURLs(bad)
		assert.Error(t, err, "%q", bad)
		if err != nil {
			assert.NotContains(t, err.Error(), "secret", "%q", bad)
		}
	}
}
